"""Time loading, validating and splitting a large interaction log.

    python -m benchmarks.load_benchmark --rows 10000000 \
        --out benchmarks/results/data.json

Writes a realistic CSV log (integer ids, about 100k users and 50k items,
long-tailed popularity, two years of timestamps) to a temporary folder,
then times `data.load.load` and `data.split.split_interactions(...,
"temporal", seed=0)` on it and records the peak resident memory. The target
is load + validation + split under 2 minutes and under 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

import data  # noqa: F401  (sets the Keras flag before TensorFlow loads)
from data.load import load
from data.schema import ColumnMap

logger = logging.getLogger("benchmarks.load_benchmark")

START = 1_600_000_000
TWO_YEARS = 2 * 365 * 86400


def write_log(path: Path, rows: int, *, seed: int = 0) -> None:
    """Writes `rows` interactions as user_id,item_id,rating,timestamp."""
    rng = np.random.default_rng(seed)
    num_users = max(rows // 100, 10)
    num_items = max(rows // 200, 10)

    # Zipf-like popularity for items and activity for users, with the ranks
    # shuffled so that id order carries no signal.
    def long_tail(n: int, exponent: float) -> np.ndarray:
        weights = 1.0 / np.arange(1, n + 1) ** exponent
        return rng.permutation(weights / weights.sum())

    users = rng.choice(num_users, size=rows, p=long_tail(num_users, 0.8))
    items = rng.choice(num_items, size=rows, p=long_tail(num_items, 1.0))
    ratings = rng.integers(1, 6, size=rows, dtype=np.int8)
    times = np.sort(rng.integers(START, START + TWO_YEARS, size=rows))
    table = pa.table(
        {
            "user_id": users + 1,
            "item_id": items + 1,
            "rating": ratings,
            "timestamp": times,
        }
    )
    pa_csv.write_csv(table, path)


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return peak * scale / 2**30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/data.json")
    )
    parser.add_argument(
        "--skip-split",
        action="store_true",
        help="time loading only (data.split may not exist yet)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "interactions.csv"
        started = time.perf_counter()
        write_log(path, args.rows)
        logger.info(
            "Wrote %d rows (%.0f MiB) in %.1f s.",
            args.rows,
            path.stat().st_size / 2**20,
            time.perf_counter() - started,
        )

        # Loading includes every validation step.
        started = time.perf_counter()
        loaded = load(str(path), columns=ColumnMap(weight="rating"))
        load_seconds = time.perf_counter() - started
        logger.info("Loaded and validated in %.1f s.", load_seconds)

    split_seconds = None
    if not args.skip_split:
        from data.split import split_interactions

        started = time.perf_counter()
        split_interactions(loaded.interactions, "temporal", seed=0)
        split_seconds = time.perf_counter() - started
        logger.info("Split in %.1f s.", split_seconds)

    result = {
        "rows": loaded.report.rows_read,
        "load_seconds": round(load_seconds, 2),
        "split_seconds": (
            None if split_seconds is None else round(split_seconds, 2)
        ),
        "load_split_seconds": (
            None
            if split_seconds is None
            else round(load_seconds + split_seconds, 2)
        ),
        "peak_rss_gib": round(peak_rss_gib(), 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("Wrote %s: %s", args.out, result)


if __name__ == "__main__":
    main()
