"""Load, validate and summarise a data set before training on it.

    python -m data.inspect --interactions ratings.csv --weight-col rating \
        --items movies.csv --item-numeric-cols year

Prints rows, users, items, the time span, what cleaning did (duplicates,
unknown items), density, interactions per user and, when the split module
is available, the sizes of the default temporal split. A problem in the
data ends the run with ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from typing import TextIO

import numpy as np
import pyarrow.compute as pc

import data  # noqa: F401  (sets the Keras flag before TensorFlow loads)
from data.cli import add_data_arguments, load_from_args, run_main
from data.schema import LoadedData

logger = logging.getLogger(__name__)

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def _utc(seconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def summarize(loaded: LoadedData) -> dict[str, object]:
    """The numbers `inspect` prints, as a dict (also handy in notebooks)."""
    table = loaded.interactions
    users = pc.dictionary_encode(table.column("user_id").combine_chunks())
    per_user = np.bincount(users.indices.to_numpy())
    num_users = len(users.dictionary)
    num_items = len(pc.unique(table.column("item_id")))
    first, last = pc.min_max(table.column("timestamp")).values()
    summary: dict[str, object] = {
        "rows_read": loaded.report.rows_read,
        "interactions": table.num_rows,
        "users": num_users,
        "items": num_items,
        "first_time": first.as_py(),
        "last_time": last.as_py(),
        "duplicates_dropped": loaded.report.duplicates_dropped,
        "unknown_items": loaded.report.unknown_items,
        "unknown_items_dropped": loaded.report.unknown_items_dropped,
        "density": table.num_rows / max(num_users * num_items, 1),
        "per_user_quantiles": {
            q: float(np.quantile(per_user, q)) for q in QUANTILES
        },
    }
    if loaded.items is not None:
        summary["item_table_rows"] = loaded.items.table.num_rows
    if loaded.users is not None:
        summary["user_table_rows"] = loaded.users.table.num_rows
    return summary


def _split_sizes(loaded: LoadedData) -> dict[str, int] | None:
    try:
        from data.split import split_interactions
    except ImportError as error:
        logger.info("Split sizes skipped: %s", error)
        return None
    parts = split_interactions(loaded.interactions, "temporal", seed=0)
    return {
        "train": parts.train.num_rows,
        "validation": parts.validation.num_rows,
        "test": parts.test.num_rows,
    }


def report(loaded: LoadedData, out: TextIO = sys.stdout) -> None:
    """Writes the human-readable summary of a loaded data set."""
    s = summarize(loaded)
    lines = [
        f"rows read           {s['rows_read']:,}",
        f"interactions        {s['interactions']:,}",
        f"users               {s['users']:,}",
        f"items               {s['items']:,}",
        f"time span           {_utc(s['first_time'])} .. "
        f"{_utc(s['last_time'])}",
        f"duplicates dropped  {s['duplicates_dropped']:,}",
        f"unknown items       {s['unknown_items']:,}"
        + (" (dropped)" if s["unknown_items_dropped"] else ""),
        f"density             {s['density']:.6f}",
    ]
    quantiles = "  ".join(
        f"q{int(q * 100)}={v:g}" for q, v in s["per_user_quantiles"].items()
    )
    lines.append(f"per user            {quantiles}")
    if "item_table_rows" in s:
        lines.append(f"item table rows     {s['item_table_rows']:,}")
    if "user_table_rows" in s:
        lines.append(f"user table rows     {s['user_table_rows']:,}")
    sizes = _split_sizes(loaded)
    if sizes is not None:
        shown = "  ".join(f"{k}={v:,}" for k, v in sizes.items())
        lines.append(f"temporal split      {shown}")
    for warning in loaded.report.warnings:
        lines.append(f"warning: {warning}")
    out.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m data.inspect --interactions PATH``."""
    parser = argparse.ArgumentParser(
        description="Load, validate and summarise an interaction log."
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    report(load_from_args(args))


if __name__ == "__main__":
    run_main(main)
