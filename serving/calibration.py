"""Displayed scores: cosine similarity mapped to a probability in [0, 1].

Similarity ranks the candidates; the score shown next to each one is the
chance that a user goes on to interact with an item recommended at that
similarity. Export fits it by isotonic regression on the validation
pairs that training stores in `RUN_DIR/calibration.npz` and writes the
breakpoints into metadata.json, so that serving needs only `np.interp`:

    cal = fit_isotonic(pairs["similarity"], pairs["label"])
    metadata["calibration"] = cal.to_dict()
    ...
    scores = Calibration.from_dict(metadata["calibration"]).apply(sims)

Without pairs, `linear()` maps cosine c to (1 + c) / 2 and says so in
`kind`, so a caller never mistakes it for a probability.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ISOTONIC = "isotonic"
LINEAR = "linear"
KINDS = (ISOTONIC, LINEAR)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A piecewise-linear, non-decreasing map from similarity to score.

    Attributes:
      kind: "isotonic" (fitted on held-out pairs) or "linear" (fallback).
      x: increasing similarity breakpoints.
      y: non-decreasing scores in [0, 1] at those breakpoints; outside
        [x[0], x[-1]] the end values hold.
      num_pairs: how many (similarity, label) pairs the fit saw.
    """

    kind: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    num_pairs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"calibration kind is {self.kind!r}; expected one of {KINDS}"
            )
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError(
                f"calibration needs as many x as y breakpoints and at least "
                f"one; got {len(self.x)} x and {len(self.y)} y"
            )
        x, y = np.asarray(self.x), np.asarray(self.y)
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError(
                "calibration breakpoints must be non-decreasing in x and y; "
                "refit with fit_isotonic()"
            )
        if y[0] < 0 or y[-1] > 1:
            raise ValueError(
                f"calibration scores must lie in [0, 1]; got {y[0]}..{y[-1]}"
            )

    def apply(self, similarities: Any) -> np.ndarray:
        """Maps similarities to displayed scores.

        Args:
          similarities: cosine similarities, any shape; -inf (padding)
            maps to 0.

        Returns:
          float32 scores in [0, 1], same shape.
        """
        sims = np.asarray(similarities, dtype=np.float64)
        finite = np.isfinite(sims)
        scores = np.interp(np.where(finite, sims, -1.0), self.x, self.y)
        return np.where(finite, scores, 0.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under metadata.json's "calibration"."""
        return {
            "kind": self.kind,
            "x": [float(v) for v in self.x],
            "y": [float(v) for v in self.y],
            "num_pairs": int(self.num_pairs),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> Calibration:
        """Reads `to_dict()` output; None (no pairs at export) -> linear."""
        if value is None:
            return linear()
        try:
            return cls(
                kind=str(value["kind"]),
                x=tuple(float(v) for v in value["x"]),
                y=tuple(float(v) for v in value["y"]),
                num_pairs=int(value.get("num_pairs", 0)),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"metadata 'calibration' must be null or an object with "
                f"'kind', 'x' and 'y'; got {value!r} ({e})"
            ) from e


def linear() -> Calibration:
    """The fallback (1 + cosine) / 2, used when no pairs were stored."""
    return Calibration(kind=LINEAR, x=(-1.0, 1.0), y=(0.0, 1.0))


def fit_isotonic(
    similarity: Any, label: Any, min_pairs_per_bin: int = 200
) -> Calibration:
    """Fits an increasing isotonic map from similarity to P(interaction).

    The pairs are first pooled into bins of equal count (by similarity),
    and the isotonic regression runs over the bins' mean similarity and
    positive rate, weighted by their size. With positives a few percent of
    the pairs, a fit over single pairs puts steps on a handful of lucky
    hits at the ends of the range; bins keep every step on at least
    `min_pairs_per_bin` pairs.

    Args:
      similarity: `[num_pairs]` cosine similarity of a recommended item.
      label: `[num_pairs]` 1 if the user later interacted with it, else 0.
      min_pairs_per_bin: Smallest bin; fewer pairs make a single bin.

    Returns:
      An isotonic `Calibration` holding the fitted breakpoints.

    Raises:
      ValueError: if the arrays differ in length, are empty, hold
        non-finite similarities or labels other than 0/1.
    """
    # Only the export needs scikit-learn; serving reads the breakpoints.
    from sklearn.isotonic import IsotonicRegression

    sims = np.asarray(similarity, dtype=np.float64).ravel()
    labels = np.asarray(label).ravel()
    if sims.shape != labels.shape:
        raise ValueError(
            f"similarity has {sims.size} values but label has "
            f"{labels.size}; pass one label per similarity"
        )
    if sims.size == 0:
        raise ValueError(
            "no calibration pairs; store metadata 'calibration' as null "
            "(serving then uses linear())"
        )
    if not np.all(np.isfinite(sims)):
        raise ValueError(
            "similarity holds NaN or inf; drop padded candidates first"
        )
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("label must hold only 0 and 1")

    order = np.argsort(sims, kind="stable")
    bins = np.array_split(order, max(1, sims.size // min_pairs_per_bin))
    model = IsotonicRegression(
        increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip"
    )
    model.fit(
        [sims[b].mean() for b in bins],
        [labels[b].mean() for b in bins],
        sample_weight=[len(b) for b in bins],
    )
    x = np.asarray(model.X_thresholds_, dtype=np.float64)
    y = np.clip(np.asarray(model.y_thresholds_, dtype=np.float64), 0, 1)
    logger.info(
        "isotonic calibration: %d pairs in %d bins, %d breakpoints, positive "
        "rate %.4f",
        sims.size,
        len(bins),
        x.size,
        labels.mean(),
    )
    return Calibration(
        kind=ISOTONIC,
        x=tuple(x.tolist()),
        y=tuple(np.maximum.accumulate(y).tolist()),
        num_pairs=int(sims.size),
    )


def brier(scores: Any, labels: Any) -> float:
    """Mean squared error between scores and 0/1 labels (lower is better)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(labels, dtype=np.float64).ravel()
    if s.shape != t.shape or s.size == 0:
        raise ValueError(
            f"brier needs as many scores as labels, at least one; got "
            f"{s.size} scores and {t.size} labels"
        )
    return float(np.mean((s - t) ** 2))
