"""Serving: recommendations from an export directory, in process or HTTP.

    from serving import Recommender
    rec = Recommender.load("EXPORT_DIR")
    rec.recommend("user-1", k=10)

`python -m serving.query` answers from the command line and
`python -m serving.server` over HTTP; docs/export-format.md describes the
directory both read.
"""

import data  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from serving.errors import (
    ExportFormatError,
    InvalidArgumentError,
    InvalidFilterError,
    InvalidKError,
    ServingError,
    UnknownItemError,
    UnknownUserError,
)

__all__ = [
    "BatchResult",
    "ExportFormatError",
    "InvalidArgumentError",
    "InvalidFilterError",
    "InvalidKError",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "ServingError",
    "UnknownItemError",
    "UnknownUserError",
]


def __getattr__(name: str):
    # The recommender pulls in TensorFlow and ScaNN (seconds to import);
    # `serving.calibration`, which training.export imports, must not.
    if name in (
        "BatchResult",
        "Recommender",
        "Recommendation",
        "Recommendations",
    ):
        from serving import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
