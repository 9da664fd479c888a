"""Train / validation / test splits of an interaction log.

The default, ``temporal``, is the project's evaluation protocol: for each
user, interactions are ordered by time (file order breaks ties) and the
last 20% (rounded, at least one) are held out; users with fewer than five
interactions stay wholly in training. The validation set is carved from the
training part the same way, so the test set is never used for choosing
anything.

Everything is vectorised over the columns; no Python loop runs per row.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from data.schema import DataError

METHODS = ("temporal", "random", "time", "none")


@dataclasses.dataclass
class Split:
    """The three parts of a split, each in the canonical interaction form."""

    train: pa.Table
    validation: pa.Table
    test: pa.Table
    method: str

    def sizes(self) -> dict[str, int]:
        return {
            "train": self.train.num_rows,
            "validation": self.validation.num_rows,
            "test": self.test.num_rows,
        }


def _user_codes(table: pa.Table) -> np.ndarray:
    encoded = table.column("user_id").combine_chunks().dictionary_encode()
    return np.asarray(encoded.indices, dtype=np.int64)


def _holdout_mask(
    users: np.ndarray,
    order_key: np.ndarray,
    fraction: float,
    min_interactions: int,
) -> np.ndarray:
    """Marks the last `fraction` of each user's rows by `order_key`.

    Args:
      users: [n] integer user codes.
      order_key: [n] key that orders a user's rows (time, then file row; or a
        random permutation).
      fraction: Share of each eligible user's rows to hold out.
      min_interactions: Users with fewer rows hold out nothing.

    Returns:
      [n] boolean mask of held-out rows.
    """
    n = users.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((order_key, users))
    sorted_users = users[order]
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(n) - starts[sorted_users]

    # round-half-up so 20% of 7.5 rows is 2, and never less than one row
    holdout = np.maximum(np.floor(counts * fraction + 0.5), 1).astype(np.int64)
    holdout[counts < min_interactions] = 0
    per_row_count = counts[sorted_users]
    held = position >= per_row_count - holdout[sorted_users]

    mask = np.zeros(n, dtype=bool)
    mask[order] = held
    return mask


def _time_order_key(table: pa.Table) -> np.ndarray:
    timestamps = np.asarray(table.column("timestamp"), dtype=np.int64)
    rows = np.asarray(table.column("row"), dtype=np.int64)
    # rank by (timestamp, row) so equal timestamps keep file order
    return np.lexsort((rows, timestamps)).argsort(kind="stable")


def _per_user_split(
    table: pa.Table,
    key: np.ndarray,
    fraction: float,
    min_interactions: int,
) -> tuple[pa.Table, pa.Table]:
    mask = _holdout_mask(_user_codes(table), key, fraction, min_interactions)
    kept = np.flatnonzero(~mask)
    held = np.flatnonzero(mask)
    return table.take(pa.array(kept)), table.take(pa.array(held))


def split_interactions(
    table: pa.Table,
    method: str = "temporal",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
    min_interactions: int = 5,
    cutoff: int | None = None,
) -> Split:
    """Splits a canonical interaction table.

    Args:
      table: Interactions with ``user_id``, ``item_id``, ``timestamp``,
        ``row`` columns.
      method: ``temporal`` (per-user last 20% by time), ``random``
        (per-user random 20%), ``time`` (global cut-off: rows at or after
        `cutoff`, by default the time quantile that leaves `test_fraction`
        of rows, are the test set) or ``none`` (no test set; everything is
        training, less a validation slice for early stopping).
      seed: Seed of the ``random`` method; the others are deterministic.
      test_fraction: Share of rows held out for testing.
      validation_fraction: Share of the training rows held out for
        validation, carved with the same method.
      min_interactions: Per-user methods leave users with fewer
        interactions wholly in training.
      cutoff: Unix seconds of the ``time`` method's cut-off.

    Returns:
      A `Split`; row order inside each part follows the input.

    Raises:
      DataError: For an unknown method or a cut-off that leaves a part
        empty.
    """
    if method not in METHODS:
        raise DataError(
            f"unknown split method '{method}'; use one of {', '.join(METHODS)}"
        )

    def carve(part: pa.Table, fraction: float) -> tuple[pa.Table, pa.Table]:
        if method == "random":
            rng = np.random.default_rng(seed)
            key = rng.permutation(part.num_rows)
            return _per_user_split(part, key, fraction, min_interactions)
        if method == "time" and part is table:
            return _time_cut(part, fraction, cutoff)
        if method == "time":
            return _time_cut(part, fraction, None)
        key = _time_order_key(part)
        return _per_user_split(part, key, fraction, min_interactions)

    if method == "none":
        train_all, test = table, table.slice(0, 0)
    else:
        train_all, test = carve(table, test_fraction)
    train, validation = carve(train_all, validation_fraction)
    return Split(train=train, validation=validation, test=test, method=method)


def _time_cut(
    table: pa.Table, fraction: float, cutoff: int | None
) -> tuple[pa.Table, pa.Table]:
    timestamps = np.asarray(table.column("timestamp"), dtype=np.int64)
    if table.num_rows == 0:
        return table, table
    if cutoff is None:
        cutoff = int(np.quantile(timestamps, 1.0 - fraction, method="higher"))
    held = timestamps >= cutoff
    if held.all() or not held.any():
        raise DataError(
            f"time cut-off {cutoff} leaves an empty part: the log spans "
            f"{timestamps.min()} to {timestamps.max()}; choose a cut-off "
            "inside that range"
        )
    return (
        table.take(pa.array(np.flatnonzero(~held))),
        table.take(pa.array(np.flatnonzero(held))),
    )
