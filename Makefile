# Two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv with the pinned requirements when it is missing.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo

.PHONY: demo test lint bench venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	rm -rf $(DEMO)
	$(PY) -m data.synthetic --output $(DEMO)/data
	$(PY) -m training.train --interactions $(DEMO)/data/interactions.csv \
		--items $(DEMO)/data/items.csv --users $(DEMO)/data/users.csv \
		--item-text-col title --item-category-col genres \
		--item-numeric-cols year --output $(DEMO)/run
	$(PY) -m training.export --run $(DEMO)/run --output $(DEMO)/export
	$(PY) -m serving.query --model $(DEMO)/export --user 1 --k 10

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

bench: venv
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) -m benchmarks.run

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
