"""Exports a trained run as a versioned ScaNN retrieval SavedModel.

    python -m training.export --run runs/first --output exports/first

Writes ``EXPORT_DIR/<version>/`` (the next integer; existing versions are
never touched) holding the SavedModel, ``metadata.json``, the item
embeddings with their ids and the item metadata. The version is written to
a temporary directory, reloaded and checked, then renamed into place, so an
export that is killed leaves no version behind. ``docs/export-format.md``
describes the signatures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import shutil
import socket
import uuid

import numpy as np

import data  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from data import cli as data_cli
from data.pipeline import Sequences
from data.vocab import Encoder
from training import config as config_lib
from training.train import RunDir

log = logging.getLogger("training.export")

DEFAULT_MAX_K = 100
TMP_PREFIX = ".tmp-"


class ExportError(RuntimeError):
    """The run cannot be exported, or the written model failed its check."""


def load_run(run_dir: str | pathlib.Path):
    """Rebuilds the trained model of a run with its final weights.

    Returns:
      (config, encoder, model, sequences) where `sequences` are the users'
      whole training part (what serving excludes and pools).
    """
    import tensorflow as tf

    from training.model import TwoTowerModel

    paths = RunDir(run_dir)
    for needed in (paths.config, paths.encoder, paths.histories):
        if not needed.exists():
            raise ExportError(
                f"{paths.root}: {needed.name} is missing; is this a finished "
                "run of `python -m training.train`? (resume it with "
                "--resume if it was interrupted)"
            )
    # the refit model when there is one, else the early-stopped one
    weights = paths.final
    if not (weights / "weights.index").exists():
        weights = paths.best
    if not (weights / "weights.index").exists():
        raise ExportError(f"{paths.best}: no trained weights in the run")
    try:
        config = config_lib.load_config(paths.config)
    except config_lib.ConfigError as e:
        raise ExportError(str(e)) from None
    encoder = Encoder.load(paths.encoder)
    arrays = np.load(paths.histories)
    sequences = Sequences(arrays["items"], arrays["offsets"])
    model = TwoTowerModel(config.model, encoder, arrays["item_probability"])
    # one call builds the variables before the weights are read
    model.query_tower(tf.zeros([1], tf.int32), tf.zeros([1, 1], tf.int32))
    model.candidate_tower(tf.ones([1], tf.int32))
    status = tf.train.Checkpoint(model=model).read(str(weights / "weights"))
    status.expect_partial().assert_nontrivial_match()
    return config, encoder, model, sequences


def _strings(values):
    import tensorflow as tf

    return tf.Variable(tf.constant(list(values), tf.string), trainable=False)


def _lookup_table(keys):
    """String id -> 1-based code, 0 when unknown."""
    import tensorflow as tf

    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(keys), tf.string),
        tf.range(1, len(keys) + 1, dtype=tf.int64),
    )
    return tf.lookup.StaticHashTable(initializer, default_value=0)


def make_module(
    *,
    query_tower,
    index_layer,
    item_ids,
    item_embeddings,
    user_ids,
    histories,
    seen: Sequences,
    max_k: int,
):
    """The exported `tf.Module` with every serving signature.

    Args:
      query_tower: Keras layer (user codes [B], history codes [B, L]) ->
        [B, d] unit query embeddings.
      index_layer: Indexed ScaNN layer whose identifiers are item codes.
      item_ids: [C] item ids; item code c is ``item_ids[c - 1]``.
      item_embeddings: [C, d] candidate embeddings.
      user_ids: [U] user ids; user code u is ``user_ids[u - 1]``.
      histories: [U + 1, L] each user's most recent item codes, 0 padded.
      seen: Items to exclude per user code.
      max_k: Largest k a caller may ask for.
    """
    import tensorflow as tf

    num_items = len(item_ids)
    max_k = int(min(max_k, num_items))
    history_length = histories.shape[1]

    class RetrievalModule(tf.Module):
        def __init__(self):
            super().__init__()
            self.query_tower = query_tower
            self.index = index_layer
            self.item_ids = _strings([""] + list(item_ids))
            self.item_table = _lookup_table(item_ids)
            self.user_table = _lookup_table(user_ids)
            padded = np.concatenate(
                [np.zeros((1, item_embeddings.shape[1])), item_embeddings]
            ).astype(np.float32)
            self.item_embeddings = tf.Variable(padded, trainable=False)
            self.histories = tf.Variable(
                histories.astype(np.int32), trainable=False
            )
            self.seen_codes = tf.Variable(
                np.concatenate([[0], seen.items]).astype(np.int32),
                trainable=False,
            )
            self.seen_offsets = tf.Variable(
                seen.offsets.astype(np.int64), trainable=False
            )
            self.max_k = tf.constant(max_k, tf.int32)

        def _users(self, user_ids):
            return tf.cast(self.user_table.lookup(user_ids), tf.int32)

        def _seen(self, codes):
            codes = tf.cast(codes, tf.int64)
            start = tf.gather(self.seen_offsets, codes)
            end = tf.gather(self.seen_offsets, codes + 1)
            index = tf.ragged.range(start, end)
            # slot 0 of seen_codes is padding; offsets index from 1
            return tf.gather(self.seen_codes, index + 1)

        def _items(self, item_ids):
            return tf.cast(self.item_table.lookup(item_ids), tf.int32)

        def _user_queries(self, codes):
            history = tf.gather(self.histories, codes)
            return self.query_tower(codes, history)

        def _history_codes(self, history):
            codes = self._items(history)
            known = tf.ragged.boolean_mask(codes, codes > 0)
            recent = known[:, -history_length:]
            return known, recent.to_tensor(
                default_value=0, shape=[None, history_length]
            )

        def _search(self, queries, exclude, k):
            """Top-k item codes by inner product, minus `exclude` codes."""
            tf.debugging.assert_greater_equal(
                k, 1, message="k must be at least 1"
            )
            tf.debugging.assert_less_equal(
                k, self.max_k, message=f"k must be at most {max_k}"
            )
            lengths = tf.concat(
                [tf.cast(exclude.row_lengths(), tf.int32), [0]], axis=0
            )
            fetch = tf.minimum(k + tf.reduce_max(lengths), num_items)
            scores, codes = self.index(queries, k=fetch)
            codes = tf.cast(codes, tf.int64)

            # membership of (row, code) keys in the sorted excluded keys
            base = tf.constant(num_items + 1, tf.int64)
            rows = tf.cast(exclude.value_rowids(), tf.int64)
            excluded = tf.sort(rows * base + tf.cast(exclude.values, tf.int64))
            excluded = tf.concat([excluded, [-1]], axis=0)
            batch = tf.shape(codes, out_type=tf.int64)[0]
            keys = tf.range(batch)[:, None] * base + codes
            flat = tf.reshape(keys, [-1])
            position = tf.searchsorted(excluded[:-1], flat)
            hit = tf.gather(excluded, position) == flat
            hit = tf.reshape(hit, tf.shape(keys))
            scores = tf.where(hit, -np.inf, scores)

            # a tree index returns at most its reordering count of
            # candidates, which can be fewer than k: pad the rest
            found = tf.minimum(k, tf.shape(scores)[1])
            top_scores, order = tf.math.top_k(scores, k=found)
            top_codes = tf.gather(codes, order, batch_dims=1)
            missing = [[0, 0], [0, k - found]]
            top_scores = tf.pad(top_scores, missing, constant_values=-np.inf)
            top_codes = tf.pad(top_codes, missing)
            top_codes = tf.where(
                tf.math.is_inf(top_scores), tf.zeros_like(top_codes), top_codes
            )
            return top_scores, tf.gather(self.item_ids, top_codes)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="user_ids"),
                tf.TensorSpec([], tf.int32, name="k"),
            ]
        )
        def serving_default(self, user_ids, k):
            codes = self._users(user_ids)
            scores, ids = self._search(
                self._user_queries(codes), self._seen(codes), k
            )
            return {"item_ids": ids, "scores": scores, "known": codes > 0}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="user_ids"),
                tf.TensorSpec([None, None], tf.string, name="exclude"),
                tf.TensorSpec([], tf.int32, name="k"),
            ]
        )
        def recommend_excluding(self, user_ids, exclude, k):
            codes = self._users(user_ids)
            extra = self._items(exclude)
            extra = tf.ragged.boolean_mask(extra, extra > 0)
            scores, ids = self._search(
                self._user_queries(codes),
                tf.concat([self._seen(codes), extra], axis=1),
                k,
            )
            return {"item_ids": ids, "scores": scores, "known": codes > 0}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.string, name="history"),
                tf.TensorSpec([], tf.int32, name="k"),
            ]
        )
        def recommend_for_history(self, history, k):
            known, recent = self._history_codes(history)
            users = tf.zeros(tf.shape(recent)[:1], tf.int32)
            scores, ids = self._search(
                self.query_tower(users, recent), known, k
            )
            return {
                "item_ids": ids,
                "scores": scores,
                "known_items": tf.cast(known.row_lengths(), tf.int32),
            }

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="item_ids"),
                tf.TensorSpec([], tf.int32, name="k"),
            ]
        )
        def similar_items(self, item_ids, k):
            codes = self._items(item_ids)
            queries = tf.gather(self.item_embeddings, codes)
            itself = tf.RaggedTensor.from_tensor(
                codes[:, None], lengths=tf.cast(codes > 0, tf.int64)
            )
            scores, ids = self._search(queries, itself, k)
            known = codes > 0
            scores = tf.where(known[:, None], scores, -np.inf)
            ids = tf.where(known[:, None], ids, "")
            return {"item_ids": ids, "scores": scores, "known": known}

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.string, name="user_ids")]
        )
        def user_embeddings(self, user_ids):
            codes = self._users(user_ids)
            return {
                "embeddings": self._user_queries(codes),
                "known": codes > 0,
            }

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.string, name="history")
            ]
        )
        def history_embeddings(self, history):
            _, recent = self._history_codes(history)
            users = tf.zeros(tf.shape(recent)[:1], tf.int32)
            return {"embeddings": self.query_tower(users, recent)}

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.string, name="user_ids")]
        )
        def seen_items(self, user_ids):
            seen_codes = self._seen(self._users(user_ids))
            ids = tf.gather(self.item_ids, seen_codes)
            return {"item_ids": ids.to_tensor(default_value="")}

    return RetrievalModule()


SIGNATURES = (
    "serving_default",
    "recommend_excluding",
    "recommend_for_history",
    "similar_items",
    "user_embeddings",
    "history_embeddings",
    "seen_items",
)


def _remove_abandoned(export_dir: pathlib.Path) -> None:
    """Deletes temporary versions whose exporting process has died.

    A killed export leaves its ``.tmp-<host>-<pid>-<id>`` folder behind
    (never a numbered version). Only folders written on this host by a
    process that no longer runs are removed: another export at work, here
    or on another machine sharing the directory, is left alone.
    """
    for path in export_dir.glob(f"{TMP_PREFIX}*"):
        parts = path.name[len(TMP_PREFIX) :].split("-")
        if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit():
            continue
        if _process_alive(int(parts[1])):
            continue
        log.info("removing %s, left by an export that was stopped", path)
        shutil.rmtree(path, ignore_errors=True)


def _host() -> str:
    """This machine's name, without the '-' that separates name parts."""
    return socket.gethostname().replace("-", "_") or "localhost"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def next_version(export_dir: pathlib.Path) -> int:
    """One more than the largest integer-named version present."""
    versions = (
        [
            int(p.name)
            for p in export_dir.iterdir()
            if p.is_dir() and p.name.isdigit()
        ]
        if export_dir.exists()
        else []
    )
    return max(versions, default=0) + 1


def _item_records(run: RunDir, encoder: Encoder) -> list[dict]:
    """Metadata of each catalogue item, in catalogue order."""
    ids = encoder.items.to_list()
    records = {i: {"item_id": i} for i in ids}
    table_path = run.root / "items.parquet"
    if table_path.exists():
        import pyarrow.parquet as pq

        table = pq.read_table(table_path)
        for row in table.to_pylist():
            item_id = row.pop("item_id")
            if item_id in records:
                for key, value in row.items():
                    if isinstance(value, float) and not np.isfinite(value):
                        value = None
                    records[item_id][key] = value
    return [records[i] for i in ids]


def _library_versions() -> dict:
    import importlib.metadata as md

    names = (
        "tensorflow",
        "tf-keras",
        "tensorflow-recommenders",
        "scann",
        "numpy",
    )
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _sample_queries(model, encoder, sequences, config, limit=4000):
    """Query embeddings of a seeded sample of users, to tune and check."""
    rng = np.random.default_rng(config.train.seed)
    users = np.arange(1, encoder.num_users + 1)
    if len(users) > limit:
        users = np.sort(rng.choice(users, limit, replace=False))
    histories = sequences.padded(users, config.model.history_length)
    return model.query_embeddings(users, histories)


def export(
    run_dir: str | pathlib.Path,
    export_dir: str | pathlib.Path,
    *,
    exact: bool = False,
    target_recall: float = 0.95,
    max_k: int = DEFAULT_MAX_K,
    brute_force_below: int | None = None,
) -> pathlib.Path:
    """Writes the next version of `export_dir` from a trained run.

    Args:
      run_dir: A finished training run.
      export_dir: Holds versions ``1``, ``2``, ...
      exact: Brute-force search instead of a tuned ScaNN tree.
      target_recall: Recall@10 against exact search the tuning aims for.
      max_k: Most results a caller may ask for.
      brute_force_below: Catalogues smaller than this are searched by
        brute force; None keeps `training.index.BRUTE_FORCE_BELOW`.

    Returns:
      The new version's directory.

    Raises:
      ExportError: If the run is incomplete or the reloaded model does not
        give the expected results.
    """
    import tensorflow as tf

    from serving.calibration import fit_isotonic
    from training.index import BRUTE_FORCE_BELOW, build_index

    if brute_force_below is None:
        brute_force_below = BRUTE_FORCE_BELOW

    run = RunDir(run_dir)
    export_dir = pathlib.Path(export_dir)
    config, encoder, model, sequences = load_run(run.root)

    # every catalogue item, cold ones included, gets a candidate embedding
    codes = np.arange(1, encoder.num_items + 1)
    embeddings = model.candidate_embeddings(codes)
    queries = _sample_queries(model, encoder, sequences, config)
    # the recall written to the metadata is measured on users the tuning
    # did not see (and the search widened until it reaches the target)
    tuning, held_out = queries[::2], queries[1::2]
    tuned = build_index(
        embeddings,
        tuning,
        held_out=held_out,
        target_recall=target_recall,
        exact=exact,
        identifiers=codes.astype(np.int32),
        # room for max_k results; fewer remain only after exclusions
        min_results=min(max_k, len(codes)),
        brute_force_below=brute_force_below,
    )
    histories = sequences.padded(
        np.arange(encoder.num_users + 1), config.model.history_length
    )
    module = make_module(
        query_tower=model.query_tower,
        index_layer=tuned.layer,
        item_ids=encoder.items.to_list(),
        item_embeddings=embeddings,
        user_ids=encoder.users.to_list(),
        histories=histories,
        seen=sequences,
        max_k=max_k,
    )

    calibration = None
    if run.calibration.exists():
        pairs = np.load(run.calibration)
        if len(pairs["similarity"]) and pairs["label"].any():
            calibration = fit_isotonic(
                pairs["similarity"], pairs["label"]
            ).to_dict()
    results = (
        json.loads(run.results.read_text()) if run.results.exists() else {}
    )

    export_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(export_dir)
    # host and pid in the name tell a later export whether its writer lives
    tmp = export_dir / (
        f"{TMP_PREFIX}{_host()}-{os.getpid()}-{uuid.uuid4().hex}"
    )
    # TensorFlow logs (through absl) a line per signature about renamed
    # captured inputs: noise for anyone reading the export's log
    quiet = [logging.getLogger(n) for n in ("absl", "tensorflow")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        tf.saved_model.save(
            module,
            str(tmp),
            signatures={name: getattr(module, name) for name in SIGNATURES},
        )
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
        np.save(tmp / "item_embeddings.npy", embeddings)
        (tmp / "item_ids.txt").write_text(
            "".join(f"{i}\n" for i in encoder.items.to_list())
        )
        with (tmp / "items.jsonl").open("w") as f:
            for record in _item_records(run, encoder):
                f.write(json.dumps(record) + "\n")
        metadata = {
            "format_version": 1,
            "created": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "run": str(run.root.resolve()),
            "max_k": int(min(max_k, encoder.num_items)),
            "embedding_dim": int(embeddings.shape[1]),
            "history_length": config.model.history_length,
            "num_items": encoder.num_items,
            "num_trained_items": encoder.num_trained_items,
            "num_users": encoder.num_users,
            "index": {
                **tuned.settings.to_dict(),
                "exact": tuned.settings.kind == "brute_force",
                "recall_at_10": (
                    tuned.held_out_recall_at_10
                    if tuned.held_out_recall_at_10 is not None
                    else tuned.recall_at_10
                ),
                "tuning_recall_at_10": tuned.recall_at_10,
                "held_out_queries": int(len(held_out)),
                "target_recall_at_10": target_recall,
                "single_query_ms": tuned.single_query_ms,
                "batch_queries_per_second": tuned.batch_queries_per_second,
                "tuning_queries": int(len(tuning)),
            },
            "metrics": results.get("results", {}),
            "evaluated_on": results.get("evaluated_on"),
            "calibration": calibration,
            "config": config.to_dict(),
            "library_versions": _library_versions(),
            "signatures": list(SIGNATURES),
        }
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2))
        check_export(
            tmp, embeddings, encoder, exact=tuned.settings.kind == "brute_force"
        )

        # rename is atomic; a racing export takes the next number
        while True:
            version = next_version(export_dir)
            target = export_dir / str(version)
            try:
                os.rename(tmp, target)
                break
            except OSError:
                if not target.exists():
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    metadata["version"] = version
    log.info(
        "exported version %d to %s (%s index, recall@10 %.3f)",
        version,
        target,
        tuned.settings.kind,
        metadata["index"]["recall_at_10"],
    )
    return target


def check_export(path, embeddings, encoder, *, exact: bool) -> None:
    """Reloads a written SavedModel and compares it with exact search."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    users = encoder.users.to_list()[:50]
    if not users:
        return
    k = min(10, encoder.num_items)
    out = loaded.signatures["serving_default"](
        user_ids=tf.constant(users), k=tf.constant(k)
    )
    queries = loaded.signatures["user_embeddings"](user_ids=tf.constant(users))[
        "embeddings"
    ].numpy()
    seen = loaded.signatures["seen_items"](user_ids=tf.constant(users))
    seen = seen["item_ids"].numpy()
    ids = np.array(encoder.items.to_list(), dtype=object)
    scores = queries @ embeddings.T
    agree = 0
    total = 0
    for row, user_seen in enumerate(seen):
        excluded = {s.decode() for s in user_seen if s}
        mask = np.array([i in excluded for i in ids])
        ranked = np.argsort(-np.where(mask, -np.inf, scores[row]))[:k]
        # a user with fewer than k unseen items gets fewer results
        truth = {ids[j] for j in ranked if not mask[j]}
        got = {s.decode() for s in out["item_ids"].numpy()[row] if s}
        agree += len(truth & got)
        total += len(truth)
    recall = agree / max(total, 1)
    if (exact and recall < 0.99) or recall < 0.8:
        raise ExportError(
            f"{path}: the reloaded model agrees with exact search on only "
            f"{recall:.1%} of the top-{k} items; not publishing it"
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument(
        "--output", required=True, help="export directory (holds versions)"
    )
    parser.add_argument(
        "--exact", action="store_true", help="brute-force search"
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="recall@10 against exact search to tune for (default 0.95)",
    )
    parser.add_argument(
        "--max-k",
        type=int,
        default=DEFAULT_MAX_K,
        help=f"most results a caller may ask for (default {DEFAULT_MAX_K})",
    )
    parser.add_argument(
        "--brute-force-below",
        type=int,
        metavar="N",
        help="search catalogues of fewer than N items by brute force and "
        "larger ones with a tuned ScaNN tree (default: "
        "training.index.BRUTE_FORCE_BELOW, 20000)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not 0 < args.target_recall <= 1:
        raise data_cli.UsageError("--target-recall must be in (0, 1]")
    if args.max_k < 1:
        raise data_cli.UsageError("--max-k must be at least 1")
    if args.brute_force_below is not None and args.brute_force_below < 0:
        raise data_cli.UsageError("--brute-force-below must be 0 or more")
    try:
        path = export(
            args.run,
            args.output,
            exact=args.exact,
            target_recall=args.target_recall,
            max_k=args.max_k,
            brute_force_below=args.brute_force_below,
        )
    except ExportError as e:
        raise data_cli.UsageError(str(e)) from None
    print(path)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    data_cli.run_main(main)
