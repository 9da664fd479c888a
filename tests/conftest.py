"""Shared fixtures. Importing `data` first selects Keras 2 for TFRS."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

import data  # noqa: F401

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
