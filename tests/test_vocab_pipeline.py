"""Vocabularies, feature encoding and the input pipeline on tiny tables."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from data.pipeline import (
    Sequences,
    build_sequences,
    history_window,
    make_dataset,
)
from data.schema import ItemTable, UserTable
from data.vocab import Encoder, Vocabulary
from tests.conftest import interaction_log

# Training log: items b, a, c are trained (codes by sorted id: a=1, b=2,
# c=3). The item table adds x and y, never in training: cold, codes 4, 5
# in the table's order.
TRAIN = interaction_log(
    [
        ("u2", "b", 1),
        ("u1", "a", 3),
        ("u1", "b", 1),
        ("u1", "c", 2),
        ("u2", "c", 2),
    ]
)
ITEMS = ItemTable(
    table=pa.table(
        {
            "item_id": ["c", "x", "a", "b", "y"],
            "title": ["The Red Fox", "Blue Moon", "Red Sky", "the fox", ""],
            "categories": pa.array(
                [["Drama"], ["Horror"], ["Drama", "Comedy"], [], ["Comedy"]],
                pa.list_(pa.string()),
            ),
            "year": pa.array(
                [2000.0, 1900.0, 2010.0, None, 2020.0], pa.float32()
            ),
        }
    ),
    text="title",
    categories="categories",
    numeric=("year",),
)
USERS = UserTable(
    table=pa.table(
        {
            "user_id": ["u1", "u2", "stranger"],
            "country": ["FR", "", "JP"],
        }
    ),
    features=("country",),
)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(TRAIN, ITEMS, USERS)


def test_vocabulary_codes_are_one_based_and_unknown_is_zero():
    vocab = Vocabulary(["x", "y", "z"])

    np.testing.assert_array_equal(
        vocab.lookup(["z", "x", "nope", "y"]), [3, 1, 0, 2]
    )
    assert vocab.decode(np.array([2, 0, 3])) == ["y", None, "z"]


def test_vocabulary_rejects_repeated_tokens():
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(["a", "b", "a"])


def test_catalogue_lists_trained_items_then_cold_items(encoder):
    assert encoder.num_trained_items == 3
    assert encoder.num_items == 5
    assert encoder.items.to_list() == ["a", "b", "c", "x", "y"]
    np.testing.assert_array_equal(
        encoder.item_codes(["y", "a", "unknown", "x", "c"]), [5, 1, 0, 4, 3]
    )
    np.testing.assert_array_equal(
        encoder.user_codes(["u2", "u1", "stranger"]), [2, 1, 0]
    )


def test_title_vocabulary_comes_from_trained_items_only(encoder):
    f = encoder.item_features
    # trained titles: "the red fox", "red sky", "the fox" -> the, red and
    # fox twice, sky once; "blue" and "moon" (cold item x) are left out
    tokens = f.title_vocab.to_list()
    assert sorted(tokens) == ["fox", "red", "sky", "the"]
    assert tokens[-1] == "sky"  # the rarest word gets the last code

    def words(code):
        return [t for t in f.title_vocab.decode(f.title_tokens[code]) if t]

    assert words(3) == ["the", "red", "fox"]  # c
    assert words(1) == ["red", "sky"]  # a
    # x's words are all unknown: an all-padding row; row 0 is padding
    assert not f.title_tokens[4].any()
    assert not f.title_tokens[0].any()


def test_categories_come_from_trained_items_only(encoder):
    f = encoder.item_features
    # trained categories: Drama (a, c), Comedy (a) -> sorted, 1-based
    assert f.category_vocab.to_list() == ["Comedy", "Drama"]
    np.testing.assert_array_equal(f.categories[1, :2], [2, 1])  # a
    assert not f.categories[2].any()  # b has none
    assert not f.categories[4].any()  # x: Horror is unknown
    np.testing.assert_array_equal(f.categories[5, :1], [1])  # y: Comedy


def test_numeric_fields_are_standardised_on_trained_items(encoder):
    f = encoder.item_features
    # trained years: c 2000, a 2010, b missing -> mean 2005, std 5
    np.testing.assert_allclose(f.numeric_mean, [2005.0])
    np.testing.assert_allclose(f.numeric_std, [5.0])
    # rows by code: pad, a, b, c, x, y
    # x: (1900 - 2005) / 5 = -21, clipped to -5; y: (2020 - 2005) / 5 = 3
    np.testing.assert_allclose(
        f.numeric[:, 0], [0.0, 1.0, 0.0, -1.0, -5.0, 3.0]
    )
    np.testing.assert_array_equal(
        f.numeric_missing[:, 0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    )


def test_user_features_align_with_user_codes(encoder):
    u = encoder.user_features
    assert u.names == ("country",)
    # the stranger is not a training user and does not shape the vocab
    assert u.vocabs[0].to_list() == ["", "FR"]
    # rows: pad, u1 (FR -> 2), u2 ("" -> 1)
    np.testing.assert_array_equal(u.values[:, 0], [0, 2, 1])


def test_encoder_round_trip_in_a_fresh_process(encoder, tmp_path, repo_root):
    encoder.save(tmp_path / "encoder")
    script = (
        "import json, sys\n"
        "from data.vocab import Encoder\n"
        "e = Encoder.load(sys.argv[1])\n"
        "f = e.item_features\n"
        "print(json.dumps({\n"
        "  'items': e.items.to_list(),\n"
        "  'trained': e.num_trained_items,\n"
        "  'codes': e.item_codes(['y', 'zz', 'a']).tolist(),\n"
        "  'users': e.user_codes(['u2', 'zz']).tolist(),\n"
        "  'titles': f.title_tokens.tolist(),\n"
        "  'categories': f.categories.tolist(),\n"
        "  'numeric': f.numeric.tolist(),\n"
        "  'title_vocab': f.title_vocab.to_list(),\n"
        "  'user_values': e.user_features.values.tolist(),\n"
        "}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "encoder")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(repo_root), "PATH": ""},
    )
    loaded = json.loads(out.stdout)

    f = encoder.item_features
    assert loaded["items"] == ["a", "b", "c", "x", "y"]
    assert loaded["trained"] == 3
    assert loaded["codes"] == [5, 0, 1]
    assert loaded["users"] == [2, 0]
    assert loaded["titles"] == f.title_tokens.tolist()
    assert loaded["categories"] == f.categories.tolist()
    np.testing.assert_allclose(loaded["numeric"], f.numeric)
    assert loaded["title_vocab"] == f.title_vocab.to_list()
    assert loaded["user_values"] == encoder.user_features.values.tolist()


def test_sequences_are_time_ordered_and_skip_unknowns(encoder):
    table = pa.concat_tables(
        [TRAIN, interaction_log([("u1", "nope", 0), ("stranger", "a", 0)])]
    )

    sequences, examples = build_sequences(table, encoder)

    # u1 (code 1): b@1, c@2, a@3 -> codes 2, 3, 1; u2: b@1, c@2 -> 2, 3
    np.testing.assert_array_equal(sequences.of(1), [2, 3, 1])
    np.testing.assert_array_equal(sequences.of(2), [2, 3])
    assert len(sequences.of(0)) == 0
    np.testing.assert_array_equal(examples.user, [1, 1, 1, 2, 2])
    np.testing.assert_array_equal(examples.position, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(examples.item, [2, 3, 1, 2, 3])
    # the last 2 items of each user, most recent last, left-aligned
    np.testing.assert_array_equal(
        sequences.padded(np.array([1, 2, 0]), 2), [[3, 1], [2, 3], [0, 0]]
    )
    np.testing.assert_array_equal(
        sequences.padded(np.array([2]), 4), [[2, 3, 0, 0]]
    )


# One user whose time-ordered sequence is item codes 11, 12, 13, 14, 15.
SEQUENCE = Sequences(
    items=np.array([11, 12, 13, 14, 15], np.int32),
    offsets=np.array([0, 0, 5, 5], np.int64),
)


@pytest.mark.parametrize(
    "mode, expected",
    [
        # the (up to) 2 items before the target, left-aligned
        (
            "before",
            [[0, 0], [11, 0], [11, 12], [12, 13], [13, 14]],
        ),
        # the 2 most recent items other than the target
        (
            "all",
            [[14, 15], [14, 15], [14, 15], [13, 15], [13, 14]],
        ),
    ],
)
def test_history_window(mode, expected):
    positions = np.arange(5)

    got = history_window(SEQUENCE, np.ones(5), positions, 2, mode)

    np.testing.assert_array_equal(got.numpy(), expected)


def test_history_window_all_on_a_short_sequence():
    # user 1 has 2 items: the other one, then padding
    sequences = Sequences(np.array([21, 22], np.int32), np.array([0, 0, 2]))

    got = history_window(sequences, [1, 1], [0, 1], 3, "all")

    np.testing.assert_array_equal(got.numpy(), [[22, 0, 0], [21, 0, 0]])


def test_history_window_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="history mode"):
        history_window(SEQUENCE, [1], [0], 2, "later")


def test_dataset_batches_carry_the_history(encoder):
    sequences, examples = build_sequences(TRAIN, encoder)

    ds = make_dataset(
        sequences,
        examples,
        history_length=2,
        batch_size=2,
        history_mode="before",
        shuffle=False,
    )
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]

    # 5 examples in batches of 2, 2, 1, in example order
    assert [len(b["item"]) for b in batches] == [2, 2, 1]
    assert set(batches[0]) == {"user", "item", "weight", "history"}
    items = np.concatenate([b["item"] for b in batches])
    history = np.concatenate([b["history"] for b in batches])
    np.testing.assert_array_equal(items, [2, 3, 1, 2, 3])
    # u1: [], [2], [2, 3]; u2: [], [2]
    np.testing.assert_array_equal(
        history, [[0, 0], [2, 0], [2, 3], [0, 0], [2, 0]]
    )


def test_dataset_shuffle_is_seeded_and_complete(encoder):
    sequences, examples = build_sequences(TRAIN, encoder)

    def order(seed):
        ds = make_dataset(
            sequences, examples, history_length=2, batch_size=8, seed=seed
        )
        batch = next(iter(ds))
        users, items = batch["user"].numpy(), batch["item"].numpy()
        return list(zip(users, items, strict=True))

    first = order(1)
    assert first == order(1)
    # a shuffle reorders but never drops: every (user, item) once
    assert sorted(first) == [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3)]
