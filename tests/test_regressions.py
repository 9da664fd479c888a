"""Edge cases found in review, each once a real failure."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import data  # noqa: F401  (Keras 2 before TensorFlow)
from data.pipeline import Sequences
from serving import query
from tests import export_fixtures

recommender = export_fixtures.recommender
serving_export = export_fixtures.serving_export


def _tree_module(num_items: int, reorder: int, max_k: int, seen: int):
    """An export module over a tree index that reorders `reorder` items."""
    import tensorflow as tf

    from training.export import make_module
    from training.index import IndexSettings, ScaNNIndex

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(num_items, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    query_vector = emb[:1].copy()

    class Fixed(tf.keras.layers.Layer):
        def call(self, user, history):
            return tf.repeat(tf.constant(query_vector), tf.shape(user)[0], 0)

    # the user has seen the items nearest to their query
    nearest = np.argsort(-(emb @ query_vector[0]))[:seen] + 1
    sequences = Sequences(
        nearest.astype(np.int32), np.array([0, 0, seen, seen], np.int64)
    )
    settings = IndexSettings(
        kind="tree_ah",
        num_leaves=20,
        num_leaves_to_search=20,
        num_reordering_candidates=reorder,
    )
    layer = ScaNNIndex(settings)
    codes = np.arange(1, num_items + 1, dtype=np.int32)
    layer.index(tf.constant(emb), identifiers=tf.constant(codes))
    return make_module(
        query_tower=Fixed(),
        index_layer=layer,
        item_ids=[f"i{c}" for c in codes],
        item_embeddings=emb,
        user_ids=["u"],
        histories=sequences.padded(np.arange(2), 4),
        seen=sequences,
        max_k=max_k,
    )


def test_tree_index_with_few_candidates_pads_instead_of_failing():
    import tensorflow as tf

    # reorders 30 candidates; k = 80 once crashed in top_k
    module = _tree_module(num_items=2000, reorder=30, max_k=100, seen=10)
    out = module.serving_default(tf.constant(["u"]), tf.constant(80))
    ids = out["item_ids"].numpy()[0]
    scores = out["scores"].numpy()[0]
    found = [i for i in ids if i]
    assert ids.shape == (80,)
    # at most 30 candidates, 10 of them seen: between 1 and 30 come back
    assert 0 < len(found) <= 30
    assert np.all(np.isinf(scores[len(found) :]))
    seen = {f"i{c}".encode() for c in module.seen_codes.numpy()[1:]}
    assert not seen & set(found)


def test_users_file_that_is_not_utf8_is_a_one_line_error(
    serving_export, tmp_path, capsys
):
    users = tmp_path / "users.txt"
    users.write_bytes(b"1\n\xff\n")
    code = query.main(
        [
            "--model",
            str(serving_export.export_dir),
            "--users-file",
            str(users),
            "--output",
            str(tmp_path / "recs.jsonl"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --users-file") and "UTF-8" in err
    assert len(err.strip().splitlines()) == 1


def test_users_file_output_is_readable_by_others(
    serving_export, recommender, tmp_path
):
    users = tmp_path / "users.txt"
    users.write_text("1\n2\n")
    output = tmp_path / "recs.jsonl"
    old = os.umask(0o022)
    try:
        code = query.main(
            [
                "--model",
                str(serving_export.export_dir),
                "--users-file",
                str(users),
                "--output",
                str(output),
            ]
        )
    finally:
        os.umask(old)
    assert code == 0
    assert stat.S_IMODE(output.stat().st_mode) == 0o644


@pytest.mark.parametrize("bad", ["\ud800", "ok\udcff"])
def test_unencodable_exclude_ids_are_ignored(recommender, bad):
    users = [b.user_id for b in recommender.recommend_batch(["1", "2"], 1)]
    result = recommender.recommend(users[0], k=5, exclude=[bad])
    assert len(result.items) == 5


def test_serving_expects_the_signatures_that_export_writes():
    # serving reads exports without importing training; the list is the
    # contract of docs/export-format.md, written down on both sides
    from serving.recommender import SIGNATURES as served
    from training.export import SIGNATURES as exported

    assert served == exported
