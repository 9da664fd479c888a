"""Full-ranking evaluation of top-k retrieval, as in docs/evaluation.md.

Everything here works in code space. Users are rows of a matrix indexed by
user code (row 0 is the unknown user and is never evaluated). Items are the
1-based item codes ``1..num_items``; column ``j`` of every score or
interaction matrix is item code ``j + 1``, so code 0 (unknown) has no
column.

For every evaluated user the whole item space is ranked (no sampled
negatives), the user's training items are masked to ``-inf``, and the top
``max_k`` items are compared with the held-out items:

- recall@k = hits in the top k / min(k, n_heldout);
- NDCG@k with binary gains, the ideal DCG taken over min(k, n_heldout)
  items;
- MRR@10 = 1 / rank of the first hit within the top 10, else 0;
- coverage@10 = distinct items in all users' top 10 / num_items.

The metrics are averaged over users with at least one held-out item.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from data.vocab import Encoder

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]

MRR_K = 10
COVERAGE_K = 10


@dataclasses.dataclass
class EvalResult:
    """Averaged ranking metrics of one model.

    Attributes:
      metrics: ``recall@k`` and ``ndcg@k`` for each requested k, plus
        ``mrr@10`` and ``coverage@10``.
      recall_curve: [max_k] mean recall@k for k = 1..max_k.
      num_users: Number of users averaged over.
    """

    metrics: dict[str, float]
    recall_curve: np.ndarray
    num_users: int


class InteractionMatrix(NamedTuple):
    """A binary user-item matrix and per-user interaction counts.

    Attributes:
      matrix: [num_users + 1, num_items] binary CSR matrix; row = user
        code, column j = item code j + 1. Rows whose user or item is not in
        the item space are left out.
      counts: [num_users + 1] number of distinct items per user code in
        the whole table, including items outside the item space. Row 0
        sums the users unknown to the encoder. Pass it as
        `heldout_counts` so unknown held-out items still count in the
        recall denominator.
    """

    matrix: sp.csr_matrix
    counts: np.ndarray


def interactions_matrix(
    table: pa.Table,
    encoder: Encoder,
    *,
    num_items: int | None = None,
) -> InteractionMatrix:
    """Builds the binary user-item matrix of a canonical interaction table.

    Args:
      table: Interactions with ``user_id`` and ``item_id`` string columns.
      encoder: Gives the user and item codes.
      num_items: Size of the item space; item codes above it are dropped.
        Defaults to ``encoder.num_trained_items``: the protocol ranks the
        items that appear in training, not cold catalogue items.

    Returns:
      The matrix and the per-user counts of distinct items (see
      `InteractionMatrix`).
    """
    if num_items is None:
        num_items = encoder.num_trained_items
    num_rows = encoder.num_users + 1

    users = encoder.user_codes(table.column("user_id")).astype(np.int64)
    items = encoder.item_codes(table.column("item_id")).astype(np.int64)
    known = (users > 0) & (items > 0) & (items <= num_items)
    matrix = sp.csr_matrix(
        (
            np.ones(int(known.sum()), np.float32),
            (users[known], items[known] - 1),
        ),
        shape=(num_rows, num_items),
    )
    # duplicates were summed by the constructor; the matrix is binary
    matrix.sum_duplicates()
    matrix.data[:] = 1.0

    # distinct (user, item id) pairs, whether or not the item is known
    pairs = pa.table(
        {
            "user_id": table.column("user_id"),
            "item_id": table.column("item_id"),
        }
    )
    per_user = pairs.group_by("user_id").aggregate(
        [("item_id", "count_distinct")]
    )
    codes = encoder.user_codes(per_user.column("user_id"))
    distinct = np.asarray(
        pc.cast(per_user.column("item_id_count_distinct"), pa.int64())
    )
    counts = np.bincount(codes, weights=distinct, minlength=num_rows)
    return InteractionMatrix(matrix, counts.astype(np.int64))


def _check_matrix(name: str, matrix: sp.spmatrix, shape: tuple) -> None:
    if matrix.shape != shape:
        raise ValueError(
            f"`{name}` has shape {matrix.shape}, expected {shape} "
            "(rows = user codes, columns = item codes - 1); build both "
            "matrices with the same encoder and item space"
        )


def _ideal_dcg(ks: np.ndarray) -> np.ndarray:
    """Ideal DCG with binary gains for each cut-off in `ks` (0 gives 0)."""
    discounts = 1.0 / np.log2(np.arange(2, ks.max() + 2))
    cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    return cumulative[ks]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row, best first.

    Args:
      scores: [B, num_items] scores; ``-inf`` marks excluded items.
      k: How many to keep; at most num_items.

    Returns:
      [B, k] column indices and [B, k] their scores. Ties at the cut-off
      are broken arbitrarily.
    """
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return (
        np.take_along_axis(part, order, axis=1),
        np.take_along_axis(part_scores, order, axis=1),
    )


def evaluate(
    score_fn: ScoreFn,
    seen: sp.csr_matrix,
    heldout: sp.csr_matrix,
    *,
    ks: Sequence[int] = (10, 20),
    max_k: int = 100,
    batch_size: int = 512,
    heldout_counts: np.ndarray | None = None,
) -> EvalResult:
    """Ranks every item for each test user and averages the metrics.

    Args:
      score_fn: Maps [B] user codes to [B, num_items] scores, column j
        being item code j + 1. Higher is better.
      seen: [num_users + 1, num_items] binary matrix of each user's
        training items; they are masked out of the ranking.
      heldout: [num_users + 1, num_items] binary matrix of each user's
        held-out items in the item space.
      ks: Cut-offs of recall@k and NDCG@k.
      max_k: Length of the ranking kept, and of the recall curve.
      batch_size: Users scored per call of `score_fn`.
      heldout_counts: Optional [num_users + 1] number of held-out items per
        user, overriding the row counts of `heldout`. Pass the counts from
        `interactions_matrix` so that held-out items outside the item space
        (which can never be hit) still count in min(k, n_heldout).

    Returns:
      An `EvalResult`. Users with no held-out item, and user code 0, are
      not evaluated.

    Raises:
      ValueError: For mismatched shapes, a `max_k` below the cut-offs, or
        scores of the wrong shape or holding NaN.
    """
    num_rows, num_items = heldout.shape
    _check_matrix("seen", seen, (num_rows, num_items))
    ks = tuple(int(k) for k in ks)
    if max_k < max(*ks, MRR_K, COVERAGE_K):
        raise ValueError(
            f"max_k={max_k} is below a requested cut-off "
            f"({max(*ks, MRR_K, COVERAGE_K)}); raise max_k"
        )
    seen = sp.csr_matrix(seen)
    heldout = sp.csr_matrix(heldout)
    if heldout_counts is None:
        heldout_counts = np.diff(heldout.indptr)
    heldout_counts = np.asarray(heldout_counts, np.int64)
    if heldout_counts.shape != (num_rows,):
        raise ValueError(
            f"`heldout_counts` has shape {heldout_counts.shape}, expected "
            f"({num_rows},): one count per user code"
        )

    users = np.flatnonzero(heldout_counts > 0)
    users = users[users > 0]
    ranked = min(max_k, num_items)

    # running sums over users of each metric
    recall_sum = np.zeros(max_k)
    ndcg_sums = {k: 0.0 for k in ks}
    mrr_sum = 0.0
    recommended = np.zeros(num_items, bool)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))
    cutoffs = np.arange(1, max_k + 1)

    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.asarray(score_fn(batch))
        if scores.shape != (len(batch), num_items):
            raise ValueError(
                f"score_fn returned shape {scores.shape} for {len(batch)} "
                f"users; expected ({len(batch)}, {num_items})"
            )
        if np.isnan(scores).any():
            raise ValueError("score_fn returned NaN scores")
        # a copy: the scores may be a view the model keeps (or read-only)
        scores = np.array(scores, dtype=np.result_type(scores, np.float32))

        # seen-item masking
        seen_rows, seen_cols = seen[batch].nonzero()
        scores[seen_rows, seen_cols] = -np.inf

        top, top_scores = top_k(scores, ranked)
        valid = np.isfinite(top_scores)
        relevant = heldout[batch].toarray().astype(bool)
        hits = np.take_along_axis(relevant, top, axis=1) & valid
        hits = np.pad(hits, ((0, 0), (0, max_k - ranked)))

        n = heldout_counts[batch][:, None]
        recall_sum += (np.cumsum(hits, axis=1) / np.minimum(cutoffs, n)).sum(
            axis=0
        )
        gains = hits * discounts
        for k in ks:
            ideal = _ideal_dcg(np.minimum(k, heldout_counts[batch]))
            ndcg_sums[k] += float((gains[:, :k].sum(axis=1) / ideal).sum())
        first = hits[:, :MRR_K]
        has_hit = first.any(axis=1)
        rank = first.argmax(axis=1) + 1
        mrr_sum += float((has_hit / rank).sum())
        recommended[top[:, :COVERAGE_K][valid[:, :COVERAGE_K]]] = True

    count = len(users)
    if count == 0:
        logger.warning("no user has a held-out item; metrics are zero")
    denom = max(count, 1)
    curve = recall_sum / denom
    metrics = {f"recall@{k}": float(curve[k - 1]) for k in ks}
    metrics.update({f"ndcg@{k}": ndcg_sums[k] / denom for k in ks})
    metrics[f"mrr@{MRR_K}"] = mrr_sum / denom
    metrics[f"coverage@{COVERAGE_K}"] = float(
        recommended.sum() / max(num_items, 1)
    )
    return EvalResult(metrics=metrics, recall_curve=curve, num_users=count)
