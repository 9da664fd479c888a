"""Recall and speed of the exported ScaNN index beside exact search and HNSW.

    python -m benchmarks.retrieval_benchmark --sizes 100000,1000000 \
        --out benchmarks/results/retrieval.json

For each catalogue size, draws L2-normalised item vectors from a mixture of
anisotropic Gaussians with long-tailed cluster sizes (the shape learned
candidate embeddings tend to have) and queries from the same mixture, then
measures recall@10 against exact search, single-query latency and batched
queries per second of:

- the ScaNN index of `training.index.build_index` (tuned to a recall
  target), saved in a SavedModel with a ``search`` signature, reloaded with
  `tf.saved_model.load` and called through the signature;
- the same export built with ``exact=True`` (ScaNN brute force);
- numpy exact search (one matmul and an argpartition);
- FAISS HNSW over a sweep of ``efSearch``;
- raw ScaNN searchers over a sweep of leaves searched and candidates
  reordered, for the recall-versus-throughput curve.

Every timing is single-threaded (TensorFlow, BLAS and FAISS limited to one
thread) unless a field says otherwise; single-query throughput is one over
the median latency, which other jobs on a shared machine disturb least.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pathlib
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np

import data  # noqa: F401  (selects Keras 2 before TensorFlow loads)

log = logging.getLogger("benchmarks.retrieval_benchmark")

DIM = 64
K = 10


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------


def clustered_vectors(
    n: int,
    dim: int = DIM,
    *,
    num_clusters: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Unit vectors from a mixture of anisotropic Gaussians.

    Cluster sizes follow a Zipf-like law, each cluster has its own random
    orientation, a decaying spectrum of spreads along its axes and an
    overall width, so that some regions of the sphere are dense and narrow
    and others sparse and wide.

    Args:
      n: Number of vectors.
      dim: Their dimension.
      num_clusters: Mixture components.
      seed: Seed of every draw.

    Returns:
      [n, dim] float32 unit vectors, in random order.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_clusters + 1) ** 0.8
    sizes = rng.multinomial(n, weights / weights.sum())
    centers = rng.normal(size=(num_clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    start = 0
    for c in np.flatnonzero(sizes):
        m = sizes[c]
        basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        decay = rng.uniform(1.0, 5.0)
        spread = np.exp(-decay * np.arange(dim) / dim)
        spread /= np.sqrt(np.mean(spread**2) * dim)
        width = rng.lognormal(np.log(0.5), 0.35)
        noise = (rng.normal(size=(m, dim)) * spread) @ basis.T
        out[start : start + m] = centers[c] + width * noise
        start += m
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out[rng.permutation(n)]


def exact_neighbours(
    queries: np.ndarray, items: np.ndarray, k: int, chunk: int = 256
) -> np.ndarray:
    """[num_queries, k] exact top-k by inner product, in query chunks."""
    from training.index import exact_top_k

    parts = [
        exact_top_k(queries[i : i + chunk], items, k)
        for i in range(0, len(queries), chunk)
    ]
    return np.concatenate(parts)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k among its first k found."""
    from training.index import recall_at_k

    return recall_at_k(np.asarray(found)[:, : truth.shape[1]], truth)


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def time_single(
    search: Callable[[np.ndarray], object], queries: np.ndarray
) -> dict:
    """Latency of one query at a time (after two warm-up calls)."""
    for q in queries[:2]:
        search(q[None, :])
    latencies = []
    for q in queries:
        start = time.perf_counter()
        search(q[None, :])
        latencies.append(time.perf_counter() - start)
    ms = 1000 * np.asarray(latencies)
    return {
        "single_query_p50_ms": round(float(np.median(ms)), 4),
        "single_query_p99_ms": round(float(np.percentile(ms, 99)), 4),
        "single_query_qps": round(1000 / float(np.median(ms)), 1),
        "single_queries_timed": len(queries),
    }


def time_batch(
    search: Callable[[np.ndarray], object],
    queries: np.ndarray,
    repeats: int = 3,
) -> float:
    """Queries per second of one batched call (best of `repeats`).

    A call slower than 5 s is not repeated: exact search on a large
    catalogue is too slow for noise to matter.
    """
    search(queries[:8])
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        search(queries)
        best = min(best, time.perf_counter() - start)
        if best > 5:
            break
    return round(len(queries) / best, 1)


def frontier(curve: list[dict], key: str) -> list[tuple[float, float]]:
    """(recall, throughput) points no other point beats on both."""
    points = sorted(
        ((p["recall_at_10"], p[key]) for p in curve), key=lambda p: -p[0]
    )
    best, kept = -math.inf, []
    for r, qps in points:
        if qps > best:
            kept.append((r, qps))
            best = qps
    return sorted(kept)


def interpolate_qps(
    curve: list[dict], target: float, key: str = "single_query_qps"
) -> dict:
    """Throughput of a recall-versus-QPS curve at `target` recall.

    Interpolates log throughput linearly in recall along the curve's
    frontier. Below the lowest measured recall the fastest point is used
    (an underestimate) and above the highest the slowest; `clipped` says
    when either happened.
    """
    points = frontier(curve, key)
    recalls = np.array([p[0] for p in points])
    log_qps = np.log([p[1] for p in points])
    clipped = bool(target < recalls[0] or target > recalls[-1])
    value = np.exp(np.interp(target, recalls, log_qps))
    return {"qps": round(float(value), 1), "clipped": clipped}


# ---------------------------------------------------------------------------
# The exported ScaNN index.
# ---------------------------------------------------------------------------


def save_search_model(layer, path: pathlib.Path, dim: int) -> None:
    """Saves `layer` in a SavedModel with a ``search`` signature.

    Args:
      layer: An indexed `training.index.ScaNNIndex`.
      path: The SavedModel directory to write.
      dim: Width of the query embeddings.
    """
    import tensorflow as tf

    module = tf.Module()
    module.index = layer

    # no Python control flow inside, so no autograph
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, dim], tf.float32, name="queries"),
            tf.TensorSpec([], tf.int32, name="k"),
        ],
        autograph=False,
    )
    def search(queries, k):
        scores, ids = module.index(queries, k=k)
        return {"scores": scores, "ids": ids}

    module.search = search
    tf.saved_model.save(module, str(path), signatures={"search": search})


def bench_export(
    name: str,
    items: np.ndarray,
    tuning: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    exact: bool,
    target_recall: float,
    single: int,
    workdir: pathlib.Path,
) -> dict:
    """Builds, saves, reloads and times one export of the index."""
    import tensorflow as tf

    from training.index import build_index

    start = time.perf_counter()
    tuned = build_index(
        items, tuning, target_recall=target_recall, exact=exact, k=K
    )
    build_seconds = time.perf_counter() - start
    path = workdir / name
    start = time.perf_counter()
    save_search_model(tuned.layer, path, items.shape[1])
    save_seconds = time.perf_counter() - start
    del tuned.layer

    start = time.perf_counter()
    loaded = tf.saved_model.load(str(path))
    load_seconds = time.perf_counter() - start
    signature = loaded.signatures["search"]
    k = tf.constant(K, tf.int32)

    def search(batch: np.ndarray):
        return signature(queries=tf.constant(batch), k=k)["ids"]

    found = np.concatenate(
        [
            search(queries[i : i + 1000]).numpy()
            for i in range(0, len(queries), 1000)
        ]
    )
    result = {
        "settings": tuned.settings.to_dict(),
        "recall_at_10": round(recall(found, truth), 4),
        "tuning_recall_at_10": round(tuned.recall_at_10, 4),
        "build_seconds": round(build_seconds, 1),
        "save_seconds": round(save_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        **time_single(search, queries[:single]),
        # the exported layer searches a batch on one thread
        "batch_qps": time_batch(search, queries),
        "batch_threads": "one (parallelize_batch_searches=False)",
    }
    log.info("%s: %s", name, _short(result))
    return result


# ---------------------------------------------------------------------------
# Other searchers.
# ---------------------------------------------------------------------------


def bench_numpy(queries, items, truth, single: int) -> dict:
    """Exact search with numpy, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from training.index import exact_top_k

    def search(batch):
        return exact_top_k(batch, items, K)

    with threadpool_limits(1):
        found = search(queries[:200])
        result = {
            "recall_at_10": round(recall(found, truth[:200]), 4),
            **time_single(search, queries[:single]),
            "batch_qps": time_batch(
                lambda b: exact_neighbours(b, items, K), queries[:1000], 1
            ),
        }
    log.info("numpy exact: %s", _short(result))
    return result


def bench_hnsw(
    items,
    queries,
    truth,
    *,
    m: int,
    ef_construction: int,
    ef_search: list[int],
    single: int,
    build_threads: int,
) -> dict:
    """FAISS HNSW: build once, sweep efSearch."""
    try:
        import faiss
    except ImportError as e:
        raise SystemExit(
            "faiss is missing: pip install -r requirements-bench.txt"
        ) from e

    index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    faiss.omp_set_num_threads(build_threads)
    start = time.perf_counter()
    index.add(items)
    build_seconds = time.perf_counter() - start
    log.info(
        "HNSW M=%d efConstruction=%d built in %.1f s (%d threads)",
        m,
        ef_construction,
        build_seconds,
        build_threads,
    )
    faiss.omp_set_num_threads(1)
    sweep = []
    for ef in ef_search:
        index.hnsw.efSearch = ef

        def search(batch):
            return index.search(batch, K)[1]

        point = {
            "ef_search": ef,
            "recall_at_10": round(recall(search(queries), truth), 4),
            **time_single(search, queries[:single]),
            "batch_qps": time_batch(search, queries),
        }
        log.info("HNSW efSearch=%d: %s", ef, _short(point))
        sweep.append(point)
    return {
        "m": m,
        "ef_construction": ef_construction,
        "build_seconds": round(build_seconds, 1),
        "build_threads": build_threads,
        "sweep": sweep,
    }


def bench_scann_sweep(
    items, queries, truth, *, num_leaves: int, single: int
) -> dict:
    """One raw ScaNN searcher (TF ops), swept over search-time settings."""
    import tensorflow as tf
    from scann.scann_ops.py import scann_ops

    start = time.perf_counter()
    searcher = (
        scann_ops.builder(items, K, "dot_product")
        .tree(
            num_leaves=num_leaves,
            num_leaves_to_search=num_leaves,
            training_iterations=12,
        )
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(400)
        .build()
    )
    build_seconds = time.perf_counter() - start
    log.info("ScaNN sweep searcher built in %.1f s", build_seconds)

    fractions = (0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.25)
    leaf_grid = sorted({max(1, round(f * num_leaves)) for f in fractions})
    sweep = []
    for leaves in leaf_grid:
        for reorder in (50, 100, 200, 400):

            def search(batch, leaves=leaves, reorder=reorder):
                return searcher.search_batched(
                    tf.constant(batch),
                    final_num_neighbors=K,
                    pre_reorder_num_neighbors=reorder,
                    leaves_to_search=leaves,
                ).indices

            point = {
                "leaves_to_search": leaves,
                "reorder": reorder,
                "recall_at_10": round(
                    recall(search(queries).numpy(), truth), 4
                ),
                **time_single(search, queries[:single]),
                "batch_qps": time_batch(search, queries),
            }
            sweep.append(point)
        log.info(
            "ScaNN sweep leaves=%d: recall %s",
            leaves,
            [p["recall_at_10"] for p in sweep[-4:]],
        )
    return {
        "num_leaves": num_leaves,
        "build_seconds": round(build_seconds, 1),
        "sweep": sweep,
    }


def _short(result: dict) -> str:
    keys = ("recall_at_10", "single_query_p50_ms", "single_query_qps")
    return ", ".join(f"{k} {result[k]}" for k in keys if k in result)


# ---------------------------------------------------------------------------
# One catalogue size.
# ---------------------------------------------------------------------------


def size_label(n: int) -> str:
    """100000 -> '100k', 1000000 -> '1m'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def bench_size(n: int, args: argparse.Namespace, workdir: pathlib.Path):
    """Every searcher on one generated catalogue of `n` items."""
    started = time.perf_counter()
    num_queries = args.queries + args.tuning_queries
    vectors = clustered_vectors(n + num_queries, seed=args.seed)
    items = vectors[:n]
    queries = vectors[n : n + args.queries]
    tuning = vectors[n + args.queries :]
    del vectors
    start = time.perf_counter()
    truth = exact_neighbours(queries, items, K)
    log.info(
        "%d items: exact neighbours of %d queries in %.1f s",
        n,
        len(queries),
        time.perf_counter() - start,
    )

    result = {
        "items": n,
        "dim": items.shape[1],
        "queries": len(queries),
        "tuning_queries": len(tuning),
    }
    export_args = {
        "target_recall": args.target_recall,
        "single": args.single_queries,
        "workdir": workdir,
    }
    result["scann_export"] = bench_export(
        f"scann_{n}", items, tuning, queries, truth, exact=False, **export_args
    )
    result["brute_force_export"] = bench_export(
        f"brute_{n}",
        items,
        tuning,
        queries,
        truth,
        exact=True,
        **{**export_args, "single": min(args.single_queries, 200)},
    )
    result["numpy_exact"] = bench_numpy(
        queries, items, truth, min(args.single_queries, 200)
    )
    result["faiss_hnsw"] = bench_hnsw(
        items,
        queries,
        truth,
        m=args.hnsw_m,
        ef_construction=args.ef_construction_of[n],
        ef_search=args.hnsw_ef_search,
        single=args.single_queries,
        build_threads=args.build_threads,
    )
    result["scann_sweep"] = bench_scann_sweep(
        items,
        queries,
        truth,
        num_leaves=result["scann_export"]["settings"]["num_leaves"]
        or max(2, round(math.sqrt(n))),
        single=args.single_queries,
    )

    scann = result["scann_export"]
    target = scann["recall_at_10"]
    hnsw_sweep = result["faiss_hnsw"]["sweep"]
    scann_sweep = result["scann_sweep"]["sweep"]
    hnsw = interpolate_qps(hnsw_sweep, target)
    hnsw_batch = interpolate_qps(hnsw_sweep, target, "batch_qps")
    raw = interpolate_qps(scann_sweep, target)
    raw_batch = interpolate_qps(scann_sweep, target, "batch_qps")
    brute = result["brute_force_export"]["single_query_qps"]
    result["summary"] = {
        "scann_recall_at_10": target,
        "scann_qps": scann["single_query_qps"],
        "scann_p50_ms": scann["single_query_p50_ms"],
        "scann_batch_qps": scann["batch_qps"],
        "brute_force_qps": brute,
        "numpy_exact_qps": result["numpy_exact"]["single_query_qps"],
        "faiss_hnsw_qps_at_same_recall": hnsw["qps"],
        "faiss_hnsw_interpolation_clipped": hnsw["clipped"],
        "scann_ops_qps_at_same_recall": raw["qps"],
        "scann_ops_batch_qps_at_same_recall": raw_batch["qps"],
        "faiss_hnsw_batch_qps_at_same_recall": hnsw_batch["qps"],
        "scann_over_brute_force": round(scann["single_query_qps"] / brute, 2),
        "scann_over_faiss_hnsw": round(
            scann["single_query_qps"] / hnsw["qps"], 3
        ),
        "scann_ops_batch_over_faiss_hnsw_batch": round(
            raw_batch["qps"] / hnsw_batch["qps"], 3
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("%d items summary: %s", n, result["summary"])
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retrieval_benchmark",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--sizes",
        default="100000,1000000",
        help="catalogue sizes, comma separated",
    )
    parser.add_argument(
        "--queries", type=int, default=1000, help="evaluation queries"
    )
    parser.add_argument(
        "--tuning-queries",
        type=int,
        default=500,
        help="held-out queries build_index tunes on",
    )
    parser.add_argument(
        "--single-queries",
        type=int,
        default=500,
        help="queries timed one at a time",
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument(
        "--hnsw-ef-construction",
        default="200",
        help="efConstruction: one value, or one per size (the last "
        "repeats); default 200 at every size",
    )
    parser.add_argument(
        "--hnsw-ef-search",
        default="8,12,16,24,32,48,64,128,256",
        help="efSearch values, comma separated",
    )
    parser.add_argument(
        "--build-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads of the HNSW build (searches use one)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("benchmarks/results/retrieval.json"),
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    values = [int(s) for s in args.hnsw_ef_construction.split(",") if s]
    args.ef_construction_of = {
        n: values[min(i, len(values) - 1)] for i, n in enumerate(args.sizes)
    }
    args.hnsw_ef_search = [
        int(s) for s in args.hnsw_ef_search.split(",") if s.strip()
    ]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    import tensorflow as tf

    # single-threaded timings: set before TensorFlow runs its first op
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    started = time.perf_counter()
    results = {
        "threads": "1 (TensorFlow intra/inter op, BLAS, FAISS search)",
        "python": platform.python_version(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "hnsw_ef_construction": {
            size_label(n): v for n, v in args.ef_construction_of.items()
        },
        "sizes": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retrieval_bench_") as folder:
        for n in args.sizes:
            label = size_label(n)
            results["sizes"][label] = bench_size(n, args, pathlib.Path(folder))
            results["seconds"] = round(time.perf_counter() - started, 1)
            # written after each size so a later failure keeps the rest
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("wrote %s in %.0f s", args.out, results["seconds"])


if __name__ == "__main__":
    main()
