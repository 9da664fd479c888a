"""Session fixtures: one small real export, built once per test session.

Import the fixtures into a test module to use them:

    from tests.export_fixtures import recommender, serving_export  # noqa: F401

The build is cached for the whole process: pytest gives each module that
imports a fixture its own copy of it, so the session scope alone would
build once per module.

The export comes from the real pipeline, run as the README runs it:
`data.synthetic` -> `training.train` (the session's `trained_run` from
tests/conftest.py) -> `training.export`.
"""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

import data  # noqa: F401  (Keras 2 before TensorFlow)
from tests.conftest import run_export

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CACHE: dict[str, object] = {}


@dataclasses.dataclass(frozen=True)
class ExportBuild:
    """Where the session's pipeline run wrote its outputs.

    Attributes:
      data_dir: synthetic CSVs (interactions, items, users).
      run_dir: the training run (holds calibration.npz).
      export_dir: the export root; version 1 is the only version in it.
      version_dir: `export_dir / "1"`.
    """

    data_dir: pathlib.Path
    run_dir: pathlib.Path
    export_dir: pathlib.Path
    version_dir: pathlib.Path


def export_new_version(run_dir: pathlib.Path, export_dir: pathlib.Path):
    """Writes the next version of `export_dir` from `run_dir`."""
    run_export(run_dir, export_dir)


@pytest.fixture(scope="session")
def serving_export(synthetic_log, trained_run, tmp_path_factory) -> ExportBuild:
    """An export of the session's trained run (see tests/conftest.py).

    The run is shared with the training and export tests; this export is
    its own directory, so serving tests may add versions to it.
    """
    if "build" not in _CACHE:
        export_dir = tmp_path_factory.mktemp("serving_export") / "export"
        export_new_version(trained_run, export_dir)
        _CACHE["build"] = ExportBuild(
            data_dir=synthetic_log,
            run_dir=trained_run,
            export_dir=export_dir,
            version_dir=export_dir / "1",
        )
    return _CACHE["build"]


@pytest.fixture(scope="session")
def recommender(serving_export):
    """The session export, loaded once (version 1, pinned)."""
    from serving.recommender import Recommender

    if "recommender" not in _CACHE:
        _CACHE["recommender"] = Recommender.load(
            serving_export.export_dir, version=1
        )
    return _CACHE["recommender"]
