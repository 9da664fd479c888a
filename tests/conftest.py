"""Shared fixtures. Importing `data` first selects Keras 2 for TFRS."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

import data  # noqa: F401
from data.schema import INTERACTION_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[1]
ML100K = REPO_ROOT.parent / "shared" / "data" / "ml-100k"


@pytest.fixture
def repo_root() -> Path:
    """The repository root, for running modules in a subprocess."""
    return REPO_ROOT


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[..., Path]:
    """Writes text (or bytes) to a file under tmp_path; gzips '.gz' names."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = content.encode() if isinstance(content, str) else content
        if name.endswith(".gz"):
            raw = gzip.compress(raw)
        path.write_bytes(raw)
        return path

    return write


@pytest.fixture
def ml100k() -> Path:
    """The MovieLens 100K folder next to the repository, if present."""
    if not (ML100K / "interactions.csv").exists():
        pytest.skip(f"MovieLens 100K not found at {ML100K}")
    return ML100K


# --- a trained run and its export, built once per session ---------------
#
# The log is the project's synthetic one (data/synthetic.py): 500 users and
# 400 items, about 20k interactions with planted genre structure. Five
# epochs at batch 256 take well under a minute on two cores and leave the
# model clearly ahead of popularity (recall@10 about 1.5x).

TRAIN_DATA_FLAGS = ("--item-numeric-cols", "year")
TRAIN_SETTINGS = (
    "--epochs",
    "5",
    "--set",
    "train.batch_size=256",
    "--set",
    "train.patience=5",
    "--set",
    "eval.baselines=popularity",
)


def subprocess_env() -> dict[str, str]:
    """Environment of `python -m ...` children run from the repository."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["TF_USE_LEGACY_KERAS"] = "1"
    return env


def python_process(
    *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs `python args` from the repository root, whatever its exit."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs `python args` from the repository root; fails with its stderr."""
    proc = python_process(*args, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"python {' '.join(args)} exited with {proc.returncode}:\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc


def data_flags(data_dir: Path) -> list[str]:
    """Data flags of `training.train` for a `data.synthetic` folder."""
    return [
        "--interactions",
        str(data_dir / "interactions.csv"),
        "--items",
        str(data_dir / "items.csv"),
        "--users",
        str(data_dir / "users.csv"),
        *TRAIN_DATA_FLAGS,
    ]


@pytest.fixture(scope="session")
def synthetic_log(tmp_path_factory) -> Path:
    """The synthetic data set at the trained run's size (500 x 400)."""
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, seed=0, num_users=500, num_items=400)
    return out


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory) -> Path:
    """A smaller synthetic data set (300 x 200) for runs that fail or stop."""
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("tiny")
    generate(out, seed=1, num_users=300, num_items=200)
    return out


@pytest.fixture(scope="session")
def trained_run(synthetic_log, tmp_path_factory) -> Path:
    """A finished `python -m training.train` run directory."""
    run = tmp_path_factory.mktemp("trained") / "run"
    run_python(
        "-m",
        "training.train",
        *data_flags(synthetic_log),
        *TRAIN_SETTINGS,
        "--output",
        str(run),
    )
    return run


def run_export(run_dir: Path, export_dir: Path, *flags: str) -> None:
    """`python -m training.export` of `run_dir` into `export_dir`."""
    run_python(
        "-m",
        "training.export",
        "--run",
        str(run_dir),
        "--output",
        str(export_dir),
        *flags,
    )


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory) -> Path:
    """The export root of `trained_run`, holding version 1 (brute force)."""
    root = tmp_path_factory.mktemp("exported") / "export"
    run_export(trained_run, root)
    return root


def interaction_log(rows):
    """A canonical table from (user, item, timestamp) triples, file order."""
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": [r[2] for r in rows],
            "weight": [1.0] * len(rows),
            "row": list(range(1, len(rows) + 1)),
        },
        schema=INTERACTION_SCHEMA,
    )
