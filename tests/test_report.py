"""Tests of the run report."""

import numpy as np
import pytest

import training  # noqa: F401
from training.report import write_report

RESULTS = {
    "two_tower": {
        "recall@10": 0.2012,
        "recall@20": 0.2456,
        "ndcg@10": 0.1987,
        "ndcg@20": 0.2101,
        "mrr@10": 0.3702,
        "coverage@10": 0.3104,
    },
    "popularity": {
        "recall@10": 0.1205,
        "recall@20": 0.1327,
        "ndcg@10": 0.1207,
        "ndcg@20": 0.1235,
        "mrr@10": 0.2472,
        "coverage@10": 0.044,
    },
}


@pytest.fixture
def report(tmp_path):
    k = np.arange(1, 101)
    curves = {
        "two_tower": 1 - np.exp(-k / 40),
        "popularity": 0.5 * (1 - np.exp(-k / 60)),
    }
    history = [
        {"epoch": e, "loss": 5.0 / e, "val_recall@10": 0.05 * e}
        for e in range(1, 5)
    ]
    path = write_report(
        tmp_path / "run",
        model_name="two_tower",
        results=RESULTS,
        curves=curves,
        history=history,
        notes=["ML-100K, temporal split"],
    )
    return path


def test_files_exist(report):
    assert report.name == "report.md"
    plots = report.parent / "plots"
    for name in ("learning_curves.png", "recall_at_k.png"):
        png = plots / name
        assert png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_holds_the_numbers(report):
    lines = report.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert header.split("|")[2:-1] == [
        " recall@10 ",
        " recall@20 ",
        " ndcg@10 ",
        " ndcg@20 ",
        " mrr@10 ",
        " coverage@10 ",
    ]
    rows = [line for line in lines if line.startswith("| ")][1:]
    # the model first, then the baselines
    assert rows[0].startswith("| **two_tower** | 0.2012 | 0.2456 |")
    assert rows[1] == (
        "| popularity | 0.1205 | 0.1327 | 0.1207 | 0.1235 | 0.2472 | 0.0440 |"
    )
    assert "- ML-100K, temporal split" in lines


def test_missing_metric_is_a_dash(tmp_path):
    path = write_report(
        tmp_path,
        model_name="m",
        results={"m": {"recall@10": 0.5}},
        curves={},
        history=[],
        notes=[],
    )
    assert "| **m** | 0.5000 | - | - | - | - | - |" in path.read_text()
