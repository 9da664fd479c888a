"""The walkthrough notebook runs top to bottom and is committed clean."""

from __future__ import annotations

import pathlib
import sys

import nbclient
import nbformat
from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

NOTEBOOK = (
    pathlib.Path(__file__).resolve().parents[1]
    / "notebooks"
    / "walkthrough.ipynb"
)
# the whole notebook takes about a minute on two cores
TIMEOUT_S = 240


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{NOTEBOOK.name}: cells {dirty} hold outputs; clear them with "
        "`jupyter nbconvert --clear-output --inplace` before committing"
    )


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # an extra last cell (in memory only) reports the kernel's interpreter
    notebook.cells.append(
        nbformat.v4.new_code_cell("import sys\nprint('prefix', sys.prefix)")
    )
    # the synthetic log whatever the caller's environment asks for
    monkeypatch.setenv("WALKTHROUGH_DATA", "synthetic")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # "python3" is the kernel of the interpreter running pytest (the
    # project's .venv) when ipykernel is installed there; no kernel needs
    # registering outside the repository
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name=NATIVE_KERNEL_NAME,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()

    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "recommend(" in printed
    assert "similar to" in printed
    assert f"prefix {sys.prefix}" in printed, "kernel ran another Python"
    # the report's two plots (learning curves, recall@k) are displayed
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 2
