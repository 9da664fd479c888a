"""Tests of the full-ranking evaluation against hand-computed numbers."""

import math

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

import training  # noqa: F401
from data.vocab import Encoder
from training.metrics import evaluate, interactions_matrix, top_k

L2 = math.log2


def _csr(rows: list[list[int]], num_items: int) -> sp.csr_matrix:
    """Binary matrix with row r holding 1 at the 0-based columns rows[r]."""
    dense = np.zeros((len(rows), num_items), np.float32)
    for r, cols in enumerate(rows):
        dense[r, cols] = 1.0
    return sp.csr_matrix(dense)


def _fixed_scores(scores: np.ndarray):
    return lambda users: scores[users]


# Six items, columns 0..5 (item codes 1..6). Row 0 is the unknown user.
# User 1 scores the items 6,5,4,3,2,1 on columns 0..5 and has seen column 0,
# so the ranking is columns 1,2,3,4,5; held-out columns {2, 5} sit at ranks
# 2 and 5.
# User 2 scores columns 0..5 ascending, nothing seen: ranking 5,4,3,2,1,0;
# held-out column {5} is at rank 1.
SCORES = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [6, 5, 4, 3, 2, 1],
        [1, 2, 3, 4, 5, 6],
    ],
    np.float32,
)
SEEN = _csr([[], [0], []], 6)
HELDOUT = _csr([[], [2, 5], [5]], 6)


def _evaluate(**kwargs):
    return evaluate(
        _fixed_scores(SCORES),
        SEEN,
        HELDOUT,
        ks=(2, 5),
        max_k=10,
        **kwargs,
    )


def test_hand_computed_ranking():
    result = _evaluate()
    m = result.metrics
    assert result.num_users == 2

    # recall@2: user 1 has 1 hit in 2 / min(2, 2) = 0.5; user 2: 1 / 1 = 1
    assert m["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    # recall@5: user 1 both hits / 2 = 1; user 2: 1
    assert m["recall@5"] == pytest.approx(1.0)

    # ndcg@2, user 1: DCG = 1/log2(3); ideal over 2 items 1 + 1/log2(3)
    user1 = (1 / L2(3)) / (1 + 1 / L2(3))
    assert m["ndcg@2"] == pytest.approx((user1 + 1.0) / 2)
    # ndcg@5, user 1: DCG = 1/log2(3) + 1/log2(6), same ideal
    user1 = (1 / L2(3) + 1 / L2(6)) / (1 + 1 / L2(3))
    assert m["ndcg@5"] == pytest.approx((user1 + 1.0) / 2)

    # first hits at ranks 2 and 1
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)

    # top 10 keeps only the 5 unseen items of user 1 and all 6 of user 2
    assert m["coverage@10"] == pytest.approx(6 / 6)

    # the curve: user 1 hits at ranks 2 and 5, user 2 at rank 1
    user1_curve = np.array([0, 1 / 2, 1 / 2, 1 / 2, 1, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(result.recall_curve, (user1_curve + 1) / 2)


def test_metric_keys():
    result = evaluate(_fixed_scores(SCORES), SEEN, HELDOUT, max_k=20)
    assert list(result.metrics) == [
        "recall@10",
        "recall@20",
        "ndcg@10",
        "ndcg@20",
        "mrr@10",
        "coverage@10",
    ]
    # six items: the curve is padded to max_k and stays flat past rank 6
    assert result.recall_curve.shape == (20,)
    assert result.recall_curve[-1] == result.recall_curve[5]


def test_seen_items_are_masked():
    # user 1 also holds out column 0, but it was seen: it is ranked nowhere
    heldout = _csr([[], [0], [5]], 6)
    result = evaluate(_fixed_scores(SCORES), SEEN, heldout, ks=(1, 6), max_k=10)
    assert result.metrics["recall@6"] == pytest.approx((0 + 1) / 2)


@pytest.mark.parametrize(
    "counts, expected",
    [
        # no override: user 1 has 2 held-out items, min(2, 2) = 2
        (None, (0.5 + 1.0) / 2),
        # user 1 has 3 more held-out items outside the item space: n = 5,
        # min(2, 5) = 2, the same recall@2
        ([0, 5, 1], (0.5 + 1.0) / 2),
    ],
)
def test_recall_at_2_denominator(counts, expected):
    counts = None if counts is None else np.array(counts)
    result = _evaluate(heldout_counts=counts)
    assert result.metrics["recall@2"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "counts, expected",
    [
        (None, 1.0),
        # n = 5 for user 1: 2 hits / min(5, 5) = 0.4; user 2 still 1
        ([0, 5, 1], (0.4 + 1.0) / 2),
        # n = 4 for user 2 too: 1 / 4
        ([0, 5, 4], (0.4 + 0.25) / 2),
    ],
)
def test_recall_at_5_counts_unknown_heldout(counts, expected):
    counts = None if counts is None else np.array(counts)
    result = _evaluate(heldout_counts=counts)
    assert result.metrics["recall@5"] == pytest.approx(expected)


def test_ndcg_ideal_uses_min_k_n():
    # user 2 with n = 3 (2 unknown items) and one hit at rank 1:
    # DCG@2 = 1, ideal over min(2, 3) = 2 items = 1 + 1/log2(3)
    result = _evaluate(heldout_counts=np.array([0, 2, 3]))
    user1 = (1 / L2(3)) / (1 + 1 / L2(3))
    user2 = 1 / (1 + 1 / L2(3))
    assert result.metrics["ndcg@2"] == pytest.approx((user1 + user2) / 2)


def test_mrr_is_zero_without_hit_in_top_10():
    # 12 items; the only held-out item is ranked 11th
    scores = np.array([[0] * 12, list(range(12, 0, -1))], np.float32)
    heldout = _csr([[], [10]], 12)
    seen = _csr([[], []], 12)
    result = evaluate(_fixed_scores(scores), seen, heldout, max_k=20)
    assert result.metrics["mrr@10"] == 0.0
    assert result.metrics["recall@10"] == 0.0
    assert result.recall_curve[10] == pytest.approx(1.0)


def test_coverage_counts_distinct_items():
    # 20 items, both users get the same ranking: 10 distinct of 20
    scores = np.tile(np.arange(20, 0, -1, dtype=np.float32), (3, 1))
    heldout = _csr([[], [0], [1]], 20)
    seen = _csr([[], [], []], 20)
    result = evaluate(_fixed_scores(scores), seen, heldout, max_k=20)
    assert result.metrics["coverage@10"] == pytest.approx(10 / 20)


@pytest.mark.parametrize("batch_size", [1, 2, 512])
def test_batch_size_does_not_change_results(batch_size):
    rng = np.random.default_rng(0)
    num_users, num_items = 30, 40
    scores = rng.normal(size=(num_users + 1, num_items)).astype(np.float32)
    seen = sp.csr_matrix(rng.random((num_users + 1, num_items)) < 0.2)
    heldout = sp.csr_matrix(
        (rng.random((num_users + 1, num_items)) < 0.1) & ~seen.toarray()
    )
    reference = evaluate(_fixed_scores(scores), seen, heldout, batch_size=7)
    result = evaluate(
        _fixed_scores(scores), seen, heldout, batch_size=batch_size
    )
    assert result.metrics == pytest.approx(reference.metrics)


def test_users_without_heldout_and_user_zero_are_skipped():
    heldout = _csr([[3], [], [5]], 6)
    result = evaluate(_fixed_scores(SCORES), SEEN, heldout)
    assert result.num_users == 1


def test_bad_score_shape_is_reported():
    with pytest.raises(ValueError, match="expected"):
        evaluate(lambda users: np.zeros((len(users), 5)), SEEN, HELDOUT)


def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5]], np.float32)
    ids, top = top_k(scores, 3)
    np.testing.assert_array_equal(ids, [[1, 3, 0]])
    np.testing.assert_allclose(top, [[0.9, 0.5, 0.1]])


def _table(pairs: list[tuple[str, str]]) -> pa.Table:
    n = len(pairs)
    return pa.table(
        {
            "user_id": pa.array([u for u, _ in pairs], pa.string()),
            "item_id": pa.array([i for _, i in pairs], pa.string()),
            "timestamp": pa.array(range(n), pa.int64()),
            "weight": pa.array([1.0] * n, pa.float32()),
            "row": pa.array(range(1, n + 1), pa.int64()),
        }
    )


def test_interactions_matrix_drops_unknown_but_counts_them():
    train = _table([("u1", "a"), ("u1", "b"), ("u2", "c")])
    encoder = Encoder(train)  # users u1=1, u2=2; items a=1, b=2, c=3
    test = _table(
        [
            ("u1", "c"),
            ("u1", "z"),  # unknown item: dropped, but counted for u1
            ("u1", "c"),  # duplicate: one item
            ("u2", "a"),
            ("u9", "a"),  # unknown user: row 0
        ]
    )
    matrix, counts = interactions_matrix(test, encoder)
    assert matrix.shape == (3, 3)
    np.testing.assert_array_equal(
        matrix.toarray(), [[0, 0, 0], [0, 0, 1], [1, 0, 0]]
    )
    np.testing.assert_array_equal(counts, [1, 2, 1])
