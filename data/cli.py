"""Command-line flags for naming a data set, shared by every entry point.

    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args()
    loaded = load_from_args(args)

`run_main` turns a `DataError` or `UsageError` into one line on stderr
(``error: ...``) and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from data.load import UNKNOWN_ITEM_POLICIES, load, source_columns
from data.schema import ColumnMap, DataError, LoadedData

logger = logging.getLogger(__name__)

# Item-table columns used without a flag when present under these names.
CONVENTIONAL_TEXT = ("title",)
CONVENTIONAL_CATEGORIES = ("genres", "categories")

EXIT_USAGE = 2


class UsageError(Exception):
    """Flags that do not fit together; reported like a `DataError`."""


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags that name the interaction log and its side tables."""
    group = parser.add_argument_group(
        "data",
        "Where the interactions and side tables are and which columns hold "
        "what. Sources are a .csv, .tsv, .parquet or .jsonl file (CSV, TSV "
        "and JSON lines may be .gz), a folder of such shards, or "
        "tfds:<name> (e.g. tfds:movielens/100k-ratings).",
    )
    group.add_argument(
        "--interactions",
        required=True,
        metavar="PATH",
        help="interaction log: one row per (user, item) event",
    )
    group.add_argument("--items", metavar="PATH", help="optional item table")
    group.add_argument("--users", metavar="PATH", help="optional user table")
    group.add_argument(
        "--user-col", default="user_id", help="user id column of the log"
    )
    group.add_argument(
        "--item-col", default="item_id", help="item id column of the log"
    )
    group.add_argument(
        "--time-col",
        default="timestamp",
        help="time column of the log (Unix seconds or ISO 8601); 'none' "
        "uses file order as time",
    )
    group.add_argument(
        "--weight-col",
        help="optional rating or weight column of the log (default: every "
        "interaction weighs 1)",
    )
    group.add_argument(
        "--item-id-col",
        help="id column of the item table (default: the --item-col name)",
    )
    group.add_argument(
        "--item-text-col",
        help="text column of the item table, e.g. a title (default: a "
        "column named 'title', if any)",
    )
    group.add_argument(
        "--item-category-col",
        help="multi-valued category column of the item table (default: a "
        "column named 'genres' or 'categories', if any)",
    )
    group.add_argument(
        "--category-sep",
        default="|",
        help="separator of the category values (default: '|')",
    )
    group.add_argument(
        "--item-numeric-cols",
        type=_comma_list,
        default=(),
        metavar="COL,COL",
        help="numeric columns of the item table, comma separated",
    )
    group.add_argument(
        "--user-id-col",
        help="id column of the user table (default: the --user-col name)",
    )
    group.add_argument(
        "--user-feature-cols",
        type=_comma_list,
        metavar="COL,COL",
        help="categorical columns of the user table, comma separated "
        "(default: every column but the id)",
    )
    group.add_argument(
        "--unknown-items",
        choices=UNKNOWN_ITEM_POLICIES,
        default="keep",
        help="interactions whose item is missing from --items: keep them "
        "(default) or drop them; either way they are counted and reported",
    )


def columns_from_args(args: argparse.Namespace) -> ColumnMap:
    """Builds the `ColumnMap` from the flags of `add_data_arguments`.

    Item text and category columns default to columns literally named
    ``title`` and ``genres``/``categories`` when the item table has them.

    Raises:
      UsageError: A side-table flag was given without its table.
      DataError: The item table cannot be found or read.
    """
    time = args.time_col
    if time is not None and time.strip().lower() in ("none", ""):
        time = None
    item_flags = (
        args.item_id_col,
        args.item_text_col,
        args.item_category_col,
        args.item_numeric_cols,
    )
    if args.items is None and any(item_flags):
        raise UsageError(
            "--item-id-col, --item-text-col, --item-category-col and "
            "--item-numeric-cols describe the item table; pass --items too"
        )
    if args.users is None and (args.user_id_col or args.user_feature_cols):
        raise UsageError(
            "--user-id-col and --user-feature-cols describe the user table; "
            "pass --users too"
        )

    text, categories = args.item_text_col, args.item_category_col
    if args.items is not None and (text is None or categories is None):
        found = _item_columns(args.items)
        if text is None:
            text = next((c for c in CONVENTIONAL_TEXT if c in found), None)
        if categories is None:
            categories = next(
                (c for c in CONVENTIONAL_CATEGORIES if c in found), None
            )
    return ColumnMap(
        user=args.user_col,
        item=args.item_col,
        time=time,
        weight=args.weight_col,
        item_id=args.item_id_col,
        item_text=text,
        item_categories=categories,
        category_sep=args.category_sep,
        item_numeric=tuple(args.item_numeric_cols or ()),
        user_id=args.user_id_col,
        user_features=(
            None
            if args.user_feature_cols is None
            else tuple(args.user_feature_cols)
        ),
    )


def _item_columns(source: str) -> list[str]:
    # TFDS entries map their own names (see data.tfds_source).
    if source.startswith("tfds:"):
        return []
    return source_columns(source)


def load_from_args(args: argparse.Namespace) -> LoadedData:
    """Loads the data set the flags of `add_data_arguments` describe."""
    return load(
        args.interactions,
        items=args.items,
        users=args.users,
        columns=columns_from_args(args),
        unknown_items=args.unknown_items,
    )


def run_main(main_fn: Callable[[], Any]) -> Any:
    """Runs an entry point; data and usage errors exit 2 with one line.

    Args:
      main_fn: The entry point, called without arguments.

    Returns:
      Whatever `main_fn` returns.
    """
    try:
        return main_fn()
    except (DataError, UsageError) as error:
        message = " ".join(str(error).split())
    except OSError as error:
        # a file that cannot be opened or read (permissions, a damaged
        # gzip stream, a full disk): the system's words name the file
        message = " ".join(str(error).split())
        if error.filename and str(error.filename) not in message:
            message = f"{error.filename}: {message}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
