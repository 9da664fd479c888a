"""Serving latency on a 100k-item catalogue, against the raw index search.

    PYTHONPATH=. python -m benchmarks.serving_benchmark \\
        [--items 100000] [--users 10000] [--queries 500] \\
        [--output benchmarks/results/serving.json]

Training a model on a 100k-item catalogue would take long, so this builds
an export from random clustered embeddings instead: the same signatures
and files as `training.export` (its `make_module` and
`training.index.build_index`), with a table lookup as query tower. What
is measured is the serving path, which does not care where the
embeddings came from:

  raw search   a ScaNN searcher with the export's settings over the same
               items, called directly (one TensorFlow op, eager) with the
               user's query embedding, k=10
  signature    the SavedModel's serving_default signature, one user, k=10
               (id lookup, query tower, search, seen items dropped)
  empty call   a tf.function that adds 1 to the query: the fixed cost of
               any function call, the floor under the signature's
  in process   Recommender.recommend(user, k=10)
  over HTTP    POST /v1/recommend to `python -m serving.server` on
               loopback, one client, sequential requests

p50 and p99 in milliseconds go to the output JSON, with each figure's
ratio to the raw search's (p50 to p50, p99 to p99).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import typing

import numpy as np

import data  # noqa: F401  (Keras 2 before TensorFlow)

logger = logging.getLogger("benchmarks.serving_benchmark")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _query_tower(user_vectors: np.ndarray, item_vectors: np.ndarray):
    """Keras layer (user codes [B], history codes [B, L]) -> [B, dim].

    A known user gets its row of `user_vectors`; user code 0 gets the
    normalised mean of its history's item vectors (as a trained tower
    would place an anonymous session).
    """
    import tensorflow as tf

    class TableTower(tf.keras.layers.Layer):
        def build(self, input_shape=None):
            self.users = self.add_weight(
                name="users",
                shape=user_vectors.shape,
                initializer=tf.constant_initializer(user_vectors),
                trainable=False,
            )
            self.items = self.add_weight(
                name="items",
                shape=item_vectors.shape,
                initializer=tf.constant_initializer(item_vectors),
                trainable=False,
            )

        def call(self, user_codes, history_codes):
            mask = tf.cast(history_codes > 0, tf.float32)[..., None]
            pooled = tf.reduce_sum(
                tf.gather(self.items, history_codes) * mask, axis=1
            )
            pooled = tf.math.l2_normalize(pooled, axis=-1)
            own = tf.gather(self.users, user_codes)
            return tf.where((user_codes > 0)[:, None], own, pooled)

    tower = TableTower()
    tower.build()
    return tower


class BuiltExport(typing.NamedTuple):
    """A synthetic export and what the raw search needs.

    Attributes:
      path: The version directory written.
      searcher: A ScaNN searcher with the export's settings over the same
        items, usable eagerly.
      user_vectors: [num_users, dim] query embeddings of users u0, u1, ...
    """

    path: pathlib.Path
    searcher: object
    user_vectors: np.ndarray


def build_export(
    export_dir: pathlib.Path,
    num_items: int,
    num_users: int,
    dim: int = 64,
    seen_per_user: int = 20,
    seed: int = 0,
) -> BuiltExport:
    """Writes version 1 of a synthetic export of the given size."""
    import tensorflow as tf

    from data.pipeline import Sequences
    from training.export import SIGNATURES, make_module
    from training.index import build_index, scann_builder

    rng = np.random.default_rng(seed)
    start = time.perf_counter()

    # clustered embeddings, so the tree index has structure to use
    centres = _unit(rng.normal(size=(200, dim)))
    cluster = rng.integers(0, len(centres), num_items)
    items = _unit(centres[cluster] + 0.5 * rng.normal(size=(num_items, dim)))
    users = _unit(
        centres[rng.integers(0, len(centres), num_users)]
        + 0.7 * rng.normal(size=(num_users, dim))
    )
    item_ids = [f"i{n}" for n in range(num_items)]
    user_ids = [f"u{n}" for n in range(num_users)]
    seen = rng.integers(1, num_items + 1, (num_users, seen_per_user))
    offsets = np.concatenate(
        [[0, 0], np.arange(1, num_users + 1) * seen_per_user]
    )
    sequences = Sequences(seen.ravel().astype(np.int32), offsets)
    histories = sequences.padded(np.arange(num_users + 1), seen_per_user)

    codes = np.arange(1, num_items + 1, dtype=np.int32)
    tuned = build_index(
        items, users[:1000], target_recall=0.95, identifiers=codes
    )
    logger.info(
        "index %s, recall@10 %.3f", tuned.settings.kind, tuned.recall_at_10
    )
    tower = _query_tower(
        np.concatenate([np.zeros((1, dim), np.float32), users]),
        np.concatenate([np.zeros((1, dim), np.float32), items]),
    )
    module = make_module(
        query_tower=tower,
        index_layer=tuned.layer,
        item_ids=item_ids,
        item_embeddings=items,
        user_ids=user_ids,
        histories=histories,
        seen=sequences,
        max_k=100,
    )

    export_dir.mkdir(parents=True, exist_ok=True)
    tmp = export_dir / ".tmp-benchmark"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(
        module,
        str(tmp),
        signatures={name: getattr(module, name) for name in SIGNATURES},
    )
    np.save(tmp / "item_embeddings.npy", items)
    (tmp / "item_ids.txt").write_text("".join(f"{i}\n" for i in item_ids))
    years = rng.integers(1950, 2025, num_items)
    with (tmp / "items.jsonl").open("w") as f:
        for n, item_id in enumerate(item_ids):
            row = {
                "item_id": item_id,
                "title": f"Item {n}",
                "categories": [GENRES[cluster[n] % len(GENRES)]],
                "year": int(years[n]),
            }
            f.write(json.dumps(row) + "\n")
    metadata = {
        "format_version": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "max_k": 100,
        "embedding_dim": dim,
        "num_items": num_items,
        "num_users": num_users,
        "index": {
            **tuned.settings.to_dict(),
            "recall_at_10": tuned.recall_at_10,
        },
        "metrics": {},
        "calibration": None,
        "note": "synthetic embeddings for serving_benchmark.py",
    }
    (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2))
    target = export_dir / "1"
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    logger.info(
        "built %d-item export in %.0f s", num_items, time.perf_counter() - start
    )
    # a searcher built the same way, for the raw search: the exported one
    # lives inside the SavedModel
    searcher = scann_builder(items, tuned.settings, 10).build()
    return BuiltExport(target, searcher, users)


def _percentiles(times_s: list[float]) -> tuple[float, float]:
    ms = 1000 * np.asarray(times_s)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _time_calls(fn, args: list, warmup: int = 20) -> list[float]:
    for a in args[:warmup]:
        fn(a)
    times = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t)
    return times


def _time_interleaved(fns: list, args: list, warmup: int = 20):
    """Latencies of each `fn(a)`, the functions taking turns per argument.

    Taking turns means drifting machine load affects every path alike.
    """
    for a in args[:warmup]:
        for fn in fns:
            fn(a)
    times = [[] for _ in fns]
    for a in args:
        for fn, out in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn(a)
            out.append(time.perf_counter() - t)
    return times


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_http(export_dir: pathlib.Path, users: list[str]) -> list[float]:
    """Sequential POST /v1/recommend latencies against a server process."""
    import httpx

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            "--model",
            str(export_dir),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO_ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=30) as client:

            def call(user: str) -> None:
                r = client.post(
                    "/v1/recommend", json={"user_id": user, "k": 10}
                )
                r.raise_for_status()

            return _time_calls(call, users)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--workdir", help="where to build the export (default: a temp dir)"
    )
    parser.add_argument(
        "--output", default=str(REPO_ROOT / "benchmarks/results/serving.json")
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import tempfile

    import tensorflow as tf

    from serving.recommender import Recommender

    with tempfile.TemporaryDirectory() as tmp:
        export_dir = pathlib.Path(args.workdir or tmp) / "export"
        built = build_export(export_dir, args.items, args.users)
        rng = np.random.default_rng(1)
        codes = rng.integers(0, args.users, args.queries)
        users = [f"u{n}" for n in codes]

        rec = Recommender.load(export_dir)
        signature = rec._model.signatures["serving_default"]
        k = tf.constant(10, tf.int32)
        vector_of = dict(zip(users, built.user_vectors[codes], strict=True))

        def raw_search(user: str):
            query = tf.constant(vector_of[user][None, :])
            return built.searcher.search_batched(query, final_num_neighbors=10)

        # what calling any TensorFlow function costs here, with no work
        # inside: the floor under every signature call
        empty = tf.function(lambda q: q + 1.0, autograph=False)

        raw, sig, inprocess, floor = _time_interleaved(
            [
                raw_search,
                lambda u: signature(user_ids=tf.constant([u]), k=k),
                lambda u: rec.recommend(u, k=10),
                lambda u: empty(tf.constant(vector_of[u][None, :])),
            ],
            users,
        )
        http = measure_http(export_dir, users)

    raw_p50, raw_p99 = _percentiles(raw)
    sig_p50, sig_p99 = _percentiles(sig)
    in_p50, in_p99 = _percentiles(inprocess)
    http_p50, http_p99 = _percentiles(http)
    floor_p50, _ = _percentiles(floor)
    result = {
        "num_items": args.items,
        "num_queries": args.queries,
        "k": 10,
        "index": rec.metadata["index"],
        "raw_search_p50_ms": raw_p50,
        "raw_search_p99_ms": raw_p99,
        "signature_p50_ms": sig_p50,
        "signature_p99_ms": sig_p99,
        "empty_function_p50_ms": floor_p50,
        "inprocess_p50_ms": in_p50,
        "inprocess_p99_ms": in_p99,
        "http_p50_ms": http_p50,
        "http_p99_ms": http_p99,
        "signature_p50_ratio": sig_p50 / raw_p50,
        "signature_p99_ratio": sig_p99 / raw_p99,
        "inprocess_p50_ratio": in_p50 / raw_p50,
        "inprocess_p99_ratio": in_p99 / raw_p99,
        "http_p50_ratio": http_p50 / raw_p50,
        "http_p99_ratio": http_p99 / raw_p99,
        "cpu_count": os.cpu_count(),
    }
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
