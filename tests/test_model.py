"""The towers and the retrieval loss on tiny hand-worked inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from data.schema import INTERACTION_SCHEMA, ItemTable, UserTable
from data.vocab import Encoder
from training.config import ModelConfig
from training.model import TwoTowerModel, sampling_probabilities


def _encoder(with_features: bool = True) -> Encoder:
    """Trained items a, b, c (codes 1-3); cold items x, y (codes 4, 5)."""
    rows = [("u1", "a"), ("u1", "b"), ("u2", "c"), ("u2", "a")]
    train = pa.table(
        {
            "user_id": [u for u, _ in rows],
            "item_id": [i for _, i in rows],
            "timestamp": list(range(len(rows))),
            "weight": [1.0] * len(rows),
            "row": list(range(1, len(rows) + 1)),
        },
        schema=INTERACTION_SCHEMA,
    )
    items = ItemTable(
        table=pa.table(
            {
                "item_id": ["a", "b", "c", "x", "y"],
                "title": ["red fox", "blue sky", "red sky", "fox", "sky"],
                "categories": pa.array(
                    [["Drama"], ["War"], ["Drama"], ["Drama"], ["War"]],
                    pa.list_(pa.string()),
                ),
                "year": pa.array([1990, 2000, 2010, 1980, 2020], pa.float32()),
            }
        ),
        text="title",
        categories="categories",
        numeric=("year",),
    )
    users = UserTable(
        table=pa.table({"user_id": ["u1", "u2"], "country": ["FR", "JP"]}),
        features=("country",),
    )
    if not with_features:
        return Encoder(train, items=None, users=None)
    return Encoder(train, items, users)


def _config(**changes) -> ModelConfig:
    base = ModelConfig(
        embedding_dim=8,
        output_dim=4,
        hidden_units=[8],
        history_length=6,
        candidate_id_dropout=0.0,
    )
    return dataclasses.replace(base, **changes)


def _model(config=None, encoder=None, probability=None) -> TwoTowerModel:
    encoder = encoder or _encoder()
    if probability is None:
        probability = np.full(encoder.num_items + 1, 0.2, np.float32)
    return TwoTowerModel(config or _config(), encoder, probability)


class _Fixed(tf.keras.layers.Layer):
    """A stand-in tower that returns the same embeddings for any input."""

    def __init__(self, values):
        super().__init__()
        self.values = tf.constant(values, tf.float32)

    def call(self, *inputs, training=False):
        return self.values


# Three queries and their positives: items 1, 2, 1. Columns 0 and 2 hold
# the same item (code 1), so for rows 0 and 2 the other one is an
# accidental hit. Temperature 0.5; p(item 1) = 0.5, p(item 2) = 0.25.
#
# scores = q c^T / 0.5:            row 0 [2.0, 1.2, 2.0]
#                                  row 1 [0.0, 1.6, 0.0]
#                                  row 2 [1.2, 2.0, 1.2]
# logQ subtracts log p of each column's item, [log .5, log .25, log .5],
# so column 1 gains log 2 = 0.6931 over columns 0 and 2.
#
# row 0 (positive col 0): logits minus the positive's, [0, -0.1069, 0]
#   hits removed: log(1 + e^-0.1069) = 0.6412
#   hits kept:    log(2 + e^-0.1069) = 1.0642
# row 1 (positive col 1): others at -(1.6 + 0.6931) = -2.2931
#   log(1 + 2 e^-2.2931) = 0.1839 (no accidental hits in this row)
# row 2 (positive col 2): [0, 1.4931, 0]
#   hits removed: log(1 + e^1.4931) = 1.6958
#   hits kept:    log(2 + e^1.4931) = 1.8642
# Without logQ the 0.6931 shift is gone:
#   row 0: log(1 + e^-0.8) = 0.3711 / log(2 + e^-0.8) = 0.8958
#   row 1: log(1 + 2 e^-1.6) = 0.3392
#   row 2: log(1 + e^0.8) = 1.1711 / log(2 + e^0.8) = 1.4412
# The task sums over the batch.
QUERIES = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
CANDIDATES = [[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]]
ITEMS = [1, 2, 1]


@pytest.mark.parametrize(
    "logq, remove_hits, expected",
    [
        (True, True, 0.6412 + 0.1839 + 1.6958),
        (True, False, 1.0642 + 0.1839 + 1.8642),
        (False, True, 0.3711 + 0.3392 + 1.1711),
        (False, False, 0.8958 + 0.3392 + 1.4412),
    ],
)
def test_loss_applies_logq_and_removes_accidental_hits(
    logq, remove_hits, expected
):
    config = _config(
        temperature=0.5,
        logq_correction=logq,
        remove_accidental_hits=remove_hits,
    )
    # p by item code: code 0 (padding) 0.1, item 1 0.5, item 2 0.25, ...
    probability = np.array([0.1, 0.5, 0.25, 0.1, 0.1, 0.1], np.float32)
    model = _model(config, probability=probability)
    model.query_tower = _Fixed(QUERIES)
    model.candidate_tower = _Fixed(CANDIDATES)
    features = {
        "user": tf.constant([1, 2, 1]),
        "history": tf.zeros([3, 6], tf.int32),
        "item": tf.constant(ITEMS),
    }

    loss = float(model.compute_loss(features, training=True))

    assert loss == pytest.approx(expected, abs=2e-4)


def test_loss_matches_a_numpy_softmax_on_random_embeddings():
    # the same formula on a bigger batch with repeated items:
    # logits = q c^T / t - log p(item_j), other columns of the positive's
    # item masked out, then the summed softmax cross-entropy
    rng = np.random.default_rng(0)
    q = rng.normal(size=(16, 4)).astype(np.float32)
    c = rng.normal(size=(16, 4)).astype(np.float32)
    items = rng.integers(1, 6, size=16)
    probability = rng.uniform(0.05, 0.5, size=6).astype(np.float32)
    model = _model(_config(temperature=0.2), probability=probability)
    model.query_tower = _Fixed(q)
    model.candidate_tower = _Fixed(c)

    loss = float(
        model.compute_loss(
            {
                "user": tf.zeros([16], tf.int32),
                "history": tf.zeros([16, 6], tf.int32),
                "item": tf.constant(items, tf.int32),
            }
        )
    )

    logits = q @ c.T / 0.2 - np.log(probability[items])[None, :]
    hit = (items[:, None] == items[None, :]) & ~np.eye(16, dtype=bool)
    logits = np.where(hit, -np.inf, logits)
    top = logits.max(axis=1, keepdims=True)
    log_softmax = logits - top - np.log(np.exp(logits - top).sum(1))[:, None]
    expected = -np.diag(log_softmax).sum()
    assert loss == pytest.approx(expected, rel=1e-4)


def test_sampling_probabilities_by_hand():
    # codes 1, 1, 2, 3, 3, 3 over 4 items: counts [0, 2, 1, 3, 0]; unseen
    # codes get the smallest seen count (1); divided by the 6 examples
    p = sampling_probabilities(np.array([1, 1, 2, 3, 3, 3]), 4)

    np.testing.assert_allclose(p, np.array([1, 2, 1, 3, 1]) / 6, rtol=1e-6)


@pytest.mark.parametrize("with_features", [True, False])
def test_both_towers_output_unit_vectors(with_features):
    encoder = _encoder(with_features)
    # a wide hidden layer: an untrained MLP has zero biases, so an input
    # whose ReLUs all happen to be off maps to zero, which has no direction
    model = _model(_config(hidden_units=[64]), encoder=encoder)
    codes = np.arange(1, encoder.num_items + 1)
    # an unknown user with an empty history is left out for the same
    # reason: its input is all zeros (the trained run checks that case)
    histories = np.array([[1, 2, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0], [1] * 6])

    candidates = model.candidate_embeddings(codes)
    queries = model.query_embeddings(np.array([1, 2, 1]), histories)

    assert candidates.shape == (encoder.num_items, 4)
    assert queries.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(candidates, axis=1), 1, 1e-5)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, 1e-5)


def test_cold_items_are_placed_by_their_features():
    tf.keras.utils.set_random_seed(0)
    model = _model()
    tower = model.candidate_tower
    # x (4) and y (5) are cold: no id embedding
    ids = tower.id_vectors(tf.constant([1, 4, 5, 0])).numpy()
    assert np.abs(ids[0]).sum() > 0
    assert not ids[1:].any()

    x, y, pad = model.candidate_embeddings([4, 5, 0])

    # unit length from features alone, and x ("fox", Drama, 1980) differs
    # from y ("sky", War, 2020)
    assert np.linalg.norm(x) == pytest.approx(1, abs=1e-5)
    assert np.abs(x - y).max() > 1e-3
    # padding has no features: only the MLP's biases are left
    assert np.abs(x - pad).max() > 1e-3


def test_cold_items_without_features_share_one_embedding():
    # id embedding hidden and no features: every cold item looks alike
    encoder = _encoder(with_features=True)
    model = _model(_config(use_item_features=False), encoder=encoder)

    x, y = model.candidate_embeddings([4, 5])

    np.testing.assert_allclose(x, y)


def test_history_dropout_only_while_training():
    tf.keras.utils.set_random_seed(0)
    model = _model(_config(history_dropout=0.5))
    user = tf.constant([1])
    history = tf.constant([[1, 2, 3, 1, 2, 3]])

    inference = [model.query_tower(user, history).numpy() for _ in range(3)]
    training = [
        model.query_tower(user, history, training=True).numpy()
        for _ in range(8)
    ]

    for q in inference[1:]:
        np.testing.assert_array_equal(q, inference[0])
    # eight draws of 6 keep-or-drop coins cannot all match inference
    # unless dropout is off (chance 8 * 2^-6 that any one keeps all)
    differ = [np.abs(t - inference[0]).max() > 1e-6 for t in training]
    assert sum(differ) >= 5


def test_no_history_dropout_means_training_equals_inference():
    model = _model(_config(history_dropout=0.0))
    user = tf.constant([1, 2])
    history = tf.constant([[1, 2, 3, 0, 0, 0], [3, 0, 0, 0, 0, 0]])

    np.testing.assert_allclose(
        model.query_tower(user, history, training=True).numpy(),
        model.query_tower(user, history).numpy(),
    )


def test_cold_items_in_a_history_count_only_through_features():
    # without history features a cold item has nothing to add: a history
    # of a + cold x + cold y pools like a alone (sum / sqrt(1)); with them,
    # x and y add their title and category vectors and the query moves
    user = tf.constant([1])
    with_cold = tf.constant([[1, 4, 0, 5, 0, 0]])
    alone = tf.constant([[1, 0, 0, 0, 0, 0]])

    plain = _model(_config(history_dropout=0.0, history_features=False))
    rich = _model(_config(history_dropout=0.0, history_features=True))

    np.testing.assert_allclose(
        plain.query_tower(user, with_cold).numpy(),
        plain.query_tower(user, alone).numpy(),
        atol=1e-6,
    )
    moved = rich.query_tower(user, with_cold) - rich.query_tower(user, alone)
    assert np.abs(moved.numpy()).max() > 1e-3
    # padding never counts
    np.testing.assert_allclose(
        rich.query_tower(user, tf.constant([[1, 0, 0, 0, 0, 0]])).numpy(),
        rich.query_tower(user, tf.constant([[0, 0, 1, 0, 0, 0]])).numpy(),
        atol=1e-6,
    )


def test_candidate_id_dropout_only_while_training():
    tf.keras.utils.set_random_seed(0)
    model = _model(_config(candidate_id_dropout=0.5))
    codes = tf.constant([1, 2, 3, 1, 2, 3, 1, 2, 3, 1])

    inference = model.candidate_tower(codes).numpy()
    training = model.candidate_tower(codes, training=True).numpy()

    np.testing.assert_array_equal(model.candidate_tower(codes), inference)
    # about half of the 10 rows lose their id embedding and move
    moved = np.abs(training - inference).max(axis=1) > 1e-6
    assert 1 <= moved.sum() <= 9


def test_embedding_tables_start_different():
    # one shared unseeded initializer would give every table the same
    # first rows: item code 1, title token 1 and category 1 alike
    tf.keras.utils.set_random_seed(0)
    model = _model(_config(share_item_embeddings=False, use_user_id=True))
    model.query_embeddings([1], [[1, 0, 0, 0, 0, 0]])
    model.candidate_embeddings([1])
    tables = [
        model.candidate_tower.id_embedding,
        model.candidate_tower.token_embedding,
        model.candidate_tower.category_embedding,
        model.query_tower.history_embedding,
        model.query_tower.user_embedding,
        *model.query_tower.feature_embeddings,
    ]
    first_rows = [t.embeddings.numpy()[1] for t in tables]

    for i in range(len(first_rows)):
        for j in range(i):
            assert np.abs(first_rows[i] - first_rows[j]).max() > 1e-4, (i, j)
