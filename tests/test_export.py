"""The versioned ScaNN export of a trained run (docs/export-format.md)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, run_export, run_python, subprocess_env
from training import export as export_lib

K = 10

# Loads version 1 with nothing from the project: what a serving process
# does. Prints the top-k of the given users as JSON.
LOADER = """
import json, os, sys
import numpy as np
import scann  # registers the ScaNN ops the SavedModel calls
import tensorflow as tf

path, k, users = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
model = tf.saved_model.load(path)
out = model.signatures["serving_default"](
    user_ids=tf.constant(users), k=tf.constant(k, tf.int32)
)
meta = json.load(open(os.path.join(path, "metadata.json")))
print(json.dumps({
    "item_ids": [[i.decode() for i in row] for row in out["item_ids"].numpy()],
    "scores": np.asarray(out["scores"]).tolist(),
    "known": out["known"].numpy().tolist(),
    "max_k": meta["max_k"],
}))
"""


@pytest.fixture(scope="module")
def trained(trained_run):
    """(config, encoder, model, sequences) rebuilt from the run."""
    return export_lib.load_run(trained_run)


@pytest.fixture(scope="module")
def loaded(exported):
    from training import index  # noqa: F401  (registers the ScaNN ops)

    return tf.saved_model.load(str(exported / "1"))


def _brute_force(trained, users, k=K):
    """Exact top-k ids and scores of known users, seen items excluded."""
    config, encoder, model, sequences = trained
    codes = encoder.user_codes(users)
    histories = sequences.padded(codes, config.model.history_length)
    queries = model.query_embeddings(codes, histories)
    candidates = model.candidate_embeddings(np.arange(1, encoder.num_items + 1))
    scores = queries @ candidates.T
    for row, code in enumerate(codes):
        scores[row, sequences.of(code) - 1] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = np.array(encoder.items.to_list(), dtype=object)
    return ids[order], np.take_along_axis(scores, order, 1)


def _call(loaded, name, **inputs):
    out = loaded.signatures[name](
        **{
            key: tf.constant(value, tf.int32 if key == "k" else None)
            for key, value in inputs.items()
        }
    )
    result = {key: value.numpy() for key, value in out.items()}
    if "item_ids" in result:
        result["item_ids"] = np.vectorize(bytes.decode, otypes=[object])(
            result["item_ids"]
        )
    return result


def _assert_same_top_k(got_ids, got_scores, ids, scores):
    # equal rankings up to ties in float32 similarity
    np.testing.assert_allclose(got_scores, scores, atol=1e-5)
    for got_row, row, score_row in zip(got_ids, ids, scores, strict=True):
        if list(got_row) != list(row):
            distinct = np.unique(np.round(score_row, 5))
            assert len(distinct) < len(score_row), (got_row, row)


def test_fresh_process_matches_brute_force(exported, trained):
    _, encoder, _, _ = trained
    users = encoder.users.to_list()[:25]

    proc = run_python("-c", LOADER, str(exported / "1"), str(K), *users)
    served = json.loads(proc.stdout)

    ids, scores = _brute_force(trained, users)
    assert served["known"] == [True] * len(users)
    _assert_same_top_k(
        served["item_ids"], np.array(served["scores"]), ids, scores
    )
    assert served["max_k"] == 100


@pytest.fixture(scope="module")
def tree_exported(trained_run, tmp_path_factory) -> Path:
    """The session run exported with a ScaNN tree despite its size."""
    root = tmp_path_factory.mktemp("tree") / "export"
    run_export(trained_run, root, "--brute-force-below", "100")
    return root


def test_fresh_process_loads_a_tree_index(tree_exported, trained):
    from training import index  # noqa: F401  (registers the ScaNN ops)

    _, encoder, _, _ = trained
    users = encoder.users.to_list()[:25]
    meta = json.loads((tree_exported / "1" / "metadata.json").read_text())

    proc = run_python("-c", LOADER, str(tree_exported / "1"), str(K), *users)
    served = json.loads(proc.stdout)

    # 400 items: sqrt(400) = 20 leaves, some of them searched per query;
    # tuned on half the users, checked on the other half
    assert meta["index"]["kind"] == "tree_ah"
    assert meta["index"]["num_leaves"] == 20
    assert meta["index"]["num_leaves_to_search"] < 20
    assert meta["index"]["recall_at_10"] >= 0.95
    assert meta["index"]["tuning_recall_at_10"] >= 0.95
    assert meta["index"]["held_out_queries"] == 250
    assert served["known"] == [True] * len(users)
    # the fresh process answers exactly as the same export in this one
    here = _call(
        tf.saved_model.load(str(tree_exported / "1")),
        "serving_default",
        user_ids=users,
        k=K,
    )
    assert served["item_ids"] == here["item_ids"].tolist()
    np.testing.assert_allclose(served["scores"], here["scores"], atol=1e-6)
    # candidates are reordered by exact inner products: each returned
    # score is the true similarity of the item returned
    codes = encoder.user_codes(users)
    config, _, model, sequences = trained
    queries = model.query_embeddings(
        codes, sequences.padded(codes, config.model.history_length)
    )
    for row, ids in enumerate(served["item_ids"]):
        candidates = model.candidate_embeddings(encoder.item_codes(ids))
        np.testing.assert_allclose(
            served["scores"][row], candidates @ queries[row], atol=1e-4
        )


def test_batch_recommendations_from_a_tree_index_are_never_short(
    tree_exported, trained
):
    from serving.recommender import Recommender

    _, encoder, _, sequences = trained
    rec = Recommender.load(tree_exported)
    k = rec.max_k
    # the heaviest users: the tree reorders only about max_k candidates,
    # and their seen items are dropped from those
    codes = np.argsort([-len(sequences.of(c)) for c in range(1, 41)])[:5] + 1
    users = list(encoder.users.decode(codes))

    batch = list(rec.recommend_batch(users, k))

    # the index alone comes back short for some of them
    raw = _call(
        tf.saved_model.load(str(tree_exported / "1")),
        "serving_default",
        user_ids=users,
        k=k,
    )
    returned = (raw["item_ids"] != "").sum(axis=1)
    assert (returned < k).any(), returned
    for b, code in zip(batch, codes, strict=True):
        unseen = encoder.num_items - len(set(sequences.of(code)))
        assert len(b.items) == min(k, unseen)
        assert [i.item_id for i in b.items] == rec.recommend(
            b.user_id, k
        ).item_ids


def test_export_files_round_trip(exported, trained):
    _, encoder, model, _ = trained
    version = exported / "1"
    meta = json.loads((version / "metadata.json").read_text())

    item_ids = (version / "item_ids.txt").read_text().splitlines()
    embeddings = np.load(version / "item_embeddings.npy")
    records = [
        json.loads(line)
        for line in (version / "items.jsonl").read_text().splitlines()
    ]

    assert item_ids == encoder.items.to_list()
    assert [r["item_id"] for r in records] == item_ids
    assert {"title", "year"} <= set(records[0])
    np.testing.assert_allclose(
        embeddings,
        model.candidate_embeddings(np.arange(1, encoder.num_items + 1)),
        atol=1e-5,
    )
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, 1e-5)
    assert meta["num_items"] == encoder.num_items == len(item_ids)
    # 400 items is below the tree's threshold: exact search, recall 1
    assert meta["index"]["exact"] is True
    assert meta["index"]["recall_at_10"] == 1.0
    assert set(meta["signatures"]) == set(export_lib.SIGNATURES)


def test_unknown_user_gets_the_empty_history_recommendations(loaded, trained):
    _, encoder, _, _ = trained
    known_user = encoder.users.to_list()[0]

    out = _call(loaded, "serving_default", user_ids=["nobody", known_user], k=K)
    empty = _call(loaded, "recommend_for_history", history=[[""]], k=K)
    embedding = _call(loaded, "user_embeddings", user_ids=["nobody"])

    assert out["known"].tolist() == [False, True]
    np.testing.assert_array_equal(out["item_ids"][0], empty["item_ids"][0])
    np.testing.assert_allclose(out["scores"][0], empty["scores"][0], atol=1e-6)
    assert empty["known_items"].tolist() == [0]
    # a trained model has a direction for "no history": a ranking, not ties
    assert np.linalg.norm(embedding["embeddings"][0]) == pytest.approx(1, 1e-5)
    assert np.isfinite(out["scores"][0]).all()


def test_unknown_items_in_similar_items_are_padded(loaded, trained):
    _, encoder, _, _ = trained
    item = encoder.items.to_list()[0]

    out = _call(loaded, "similar_items", item_ids=["no-such-item", item], k=5)

    assert out["known"].tolist() == [False, True]
    assert out["item_ids"][0].tolist() == [""] * 5
    assert np.isneginf(out["scores"][0]).all()
    # a known item's neighbours exclude itself and are real items
    assert item not in out["item_ids"][1]
    assert all(out["item_ids"][1])


@pytest.mark.parametrize("k", [0, 101])
def test_k_outside_one_to_max_k_is_an_error(loaded, trained, k):
    user = trained[1].users.to_list()[0]

    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be"):
        _call(loaded, "serving_default", user_ids=[user], k=k)


def test_recommend_excluding_drops_the_given_ids(loaded, trained):
    user = trained[1].users.to_list()[3]
    plain = _call(loaded, "serving_default", user_ids=[user], k=6)
    top = plain["item_ids"][0]

    out = _call(
        loaded,
        "recommend_excluding",
        user_ids=[user],
        exclude=[[top[0], "unknown-id", top[2]]],
        k=4,
    )

    # the two excluded ids leave; the rest move up in the same order
    assert out["item_ids"][0].tolist() == [top[1], top[3], top[4], top[5]]


def test_recommend_for_history_excludes_the_history(loaded, trained):
    _, encoder, _, sequences = trained
    history = list(encoder.items.decode(sequences.of(1)[-5:]))

    out = _call(
        loaded, "recommend_for_history", history=[history + ["", "zz"]], k=20
    )

    assert out["known_items"].tolist() == [5]
    assert not set(history) & set(out["item_ids"][0])
    assert all(out["item_ids"][0])


def _hashes(version: Path) -> dict[str, str]:
    return {
        str(p.relative_to(version)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(version.rglob("*"))
        if p.is_file()
    }


def test_second_export_is_version_two_beside_one(trained_run, exported):
    before = _hashes(exported / "1")

    # in-process (the fixture's export went through the command line)
    path = export_lib.export(trained_run, exported)

    assert path == exported / "2"
    assert sorted(p.name for p in exported.iterdir()) == ["1", "2"]
    assert _hashes(exported / "1") == before
    assert (exported / "2" / "saved_model.pb").exists()


def test_killed_export_leaves_no_version(trained_run, tmp_path):
    root = tmp_path / "export"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training.export",
            "--run",
            str(trained_run),
            "--output",
            str(root),
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    try:
        while not list(root.glob(f"{export_lib.TMP_PREFIX}*")):
            assert proc.poll() is None, "export ended before the kill"
            assert time.monotonic() < deadline, "no temporary version seen"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    # only the hidden temporary directory is left, never a version
    left = list(root.iterdir())
    assert [p.name for p in left if p.name.isdigit()] == []
    assert export_lib.next_version(root) == 1
    # the next export clears what the killed one left, then writes 1
    export_lib.export(trained_run, root)
    assert sorted(p.name for p in root.iterdir()) == ["1"]


def test_failed_check_removes_the_temporary_version(
    trained_run, tmp_path, monkeypatch
):
    def failing_check(path, *args, **kwargs):
        assert (Path(path) / "saved_model.pb").exists()
        raise export_lib.ExportError("check failed on purpose")

    monkeypatch.setattr(export_lib, "check_export", failing_check)
    root = tmp_path / "export"

    with pytest.raises(export_lib.ExportError, match="on purpose"):
        export_lib.export(trained_run, root)

    assert list(root.iterdir()) == []


def test_export_of_an_unfinished_run_is_refused(tmp_path):
    # the command line turns this error into one line and exit status 2
    with pytest.raises(export_lib.ExportError, match="config.toml is missing"):
        export_lib.export(tmp_path, tmp_path / "export")

    assert not (tmp_path / "export").exists()
