"""Does export's tuning reach its recall target on a large catalogue?

    python -m benchmarks.index_recall --items 200000 \
        --out benchmarks/results/index_recall.json

Builds `training.index.build_index` over generated clustered, L2-normalised
64-d item vectors (the generator of `benchmarks.retrieval_benchmark`),
tuned on one set of queries, then measures recall@10 against exact search
on a second, held-out set drawn the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import time

import data  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from benchmarks.retrieval_benchmark import clustered_vectors

log = logging.getLogger("benchmarks.index_recall")


def run(num_items: int, num_queries: int, target: float) -> dict:
    """Builds, tunes and checks one index; returns the figures."""
    import tensorflow as tf

    from training.index import build_index, exact_top_k, recall_at_k

    # one draw, so that items and both query sets share the clusters
    vectors = clustered_vectors(num_items + 2 * num_queries, seed=0)
    items = vectors[:num_items]
    tuning = vectors[num_items : num_items + num_queries]
    held_out = vectors[num_items + num_queries :]

    start = time.perf_counter()
    tuned = build_index(items, tuning, target_recall=target)
    build_seconds = time.perf_counter() - start

    truth = exact_top_k(held_out, items, 10)
    _, found = tuned.layer(tf.constant(held_out), k=10)
    return {
        "num_items": num_items,
        "target_recall_at_10": target,
        "tuning_recall_at_10": tuned.recall_at_10,
        "held_out_recall_at_10": recall_at_k(found.numpy(), truth),
        "settings": tuned.settings.to_dict(),
        "build_and_tune_seconds": build_seconds,
        "single_query_ms": tuned.single_query_ms,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--out", default="benchmarks/results/index_recall.json")
    args = parser.parse_args(argv)
    result = run(args.items, args.queries, args.target)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("%s", json.dumps(result))


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    main()
