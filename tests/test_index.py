"""The ScaNN index: exact for small catalogues, tuned to a recall target."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training.index import (
    BRUTE_FORCE_BELOW,
    _grid,
    build_index,
    default_settings,
    exact_top_k,
    recall_at_k,
)


def _clustered(rng, n: int, dim: int, clusters: int) -> np.ndarray:
    """L2-normalised vectors around `clusters` random centres."""
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(clusters, size=n)]
    points = points + 0.6 * rng.normal(size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def test_recall_at_k_by_hand():
    found = np.array([[1, 2, 3], [7, 8, 9]])
    truth = np.array([[1, 2, 4], [9, 8, 7]])

    # row 1: 2 of 3 found; row 2: all 3 in another order -> 5 / 6
    assert recall_at_k(found, truth) == pytest.approx(5 / 6)


def test_exact_top_k_by_hand():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    queries = np.array([[1.0, 0.0], [0.0, -1.0]])

    # q1 scores [1, 0, 0.6, -1]; q2 scores [0, -1, -0.8, 0]
    top = exact_top_k(queries, embeddings, 2)

    np.testing.assert_array_equal(top[0], [0, 2])
    assert sorted(top[1]) == [0, 3]


@pytest.mark.parametrize(
    "num_items, kind, leaves, to_search",
    [
        (500, "brute_force", 0, 0),
        (BRUTE_FORCE_BELOW - 1, "brute_force", 0, 0),
        # sqrt(40000) = 200 leaves, 200 // 20 = 10 searched
        (40_000, "tree_ah", 200, 10),
        # sqrt(1e6) = 1000 leaves, 50 searched
        (1_000_000, "tree_ah", 1000, 50),
    ],
)
def test_default_settings_follow_the_catalogue(
    num_items, kind, leaves, to_search
):
    settings = default_settings(num_items)

    assert settings.kind == kind
    assert settings.num_leaves == leaves
    assert settings.num_leaves_to_search == to_search
    assert default_settings(num_items, exact=True).kind == "brute_force"


def test_leaves_to_search_grow_geometrically_to_all():
    # from 100 // 50 = 2, times 1.5 rounded up, then every leaf
    assert list(_grid(100)) == [2, 3, 5, 8, 12, 18, 27, 41, 62, 93, 100]


def test_brute_force_is_exact_on_a_small_catalogue():
    rng = np.random.default_rng(0)
    embeddings = _clustered(rng, 500, 16, 10)
    queries = _clustered(rng, 40, 16, 10)
    identifiers = np.arange(1, 501, dtype=np.int32)

    tuned = build_index(embeddings, queries, identifiers=identifiers)
    scores, ids = tuned.layer(tf.constant(queries), k=10)

    assert tuned.settings.kind == "brute_force"
    assert tuned.recall_at_10 == 1.0
    truth = exact_top_k(queries, embeddings, 10)
    np.testing.assert_array_equal(ids.numpy(), identifiers[truth])
    np.testing.assert_allclose(
        scores.numpy(),
        np.take_along_axis(queries @ embeddings.T, truth, 1),
        atol=1e-5,
    )


def test_tree_index_meets_the_recall_target_on_held_out_queries():
    # 30k items: above the brute-force threshold, so a tuned tree with
    # anisotropic quantisation and exact reordering. Items, tuning queries
    # and held-out queries come from the same clusters.
    rng = np.random.default_rng(1)
    points = _clustered(rng, 30_800, 64, 200)
    embeddings, tuning, held_out = np.split(points, [30_000, 30_300])

    tuned = build_index(
        embeddings, tuning, target_recall=0.95, held_out=held_out
    )

    assert tuned.settings.kind == "tree_ah"
    assert tuned.recall_at_10 >= 0.95
    # on 500 queries the tuning never saw (they may only widen the search)
    _, found = tuned.layer(tf.constant(held_out), k=10)
    truth = exact_top_k(held_out, embeddings, 10)
    recall = recall_at_k(found.numpy(), truth)
    assert recall == pytest.approx(tuned.held_out_recall_at_10)
    assert recall >= 0.95
    # and it really searched less than everything
    assert tuned.settings.num_leaves_to_search < tuned.settings.num_leaves
