"""Recommendations from the command line.

    python -m serving.query --model EXPORT_DIR --user 42 --k 10
    python -m serving.query --model EXPORT_DIR --history 7,19,3 --format json
    python -m serving.query --model EXPORT_DIR --similar 7
    python -m serving.query --model EXPORT_DIR --users-file users.txt \\
        --output recs.jsonl [--include-seen] [--batch-size 1024]

The users file holds one user id per line (a first line `user_id` is
taken as a header). The output has one JSON line per input user, in
order:

    {"user_id": "42", "items": [{"item_id": "7", "score": 0.31,
     "similarity": 0.82}, ...]}

A user the model does not know is written as
`{"user_id": ..., "items": [], "error": "unknown user"}`, counted on
stderr with a few examples, and does not fail the run. The output is
written to a temporary file next to it and renamed at the end, so an
interrupted run leaves no partial file. Errors print one line on stderr
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import tempfile
import time
from typing import Any, TextIO

from serving.errors import ServingError

logger = logging.getLogger(__name__)

UNKNOWN_USER = "unknown user"


class UsageError(Exception):
    """A command-line value that cannot be used."""


def _ids(text: str) -> list[str]:
    return [i.strip() for i in text.split(",") if i.strip()]


def _print_table(title: str, recs, out: TextIO) -> None:
    print(
        f"{title} (model version {recs.model_version}, score "
        f"{recs.score_kind})",
        file=out,
    )
    rows = [
        (
            str(rank),
            r.item_id,
            str(r.metadata.get("title", "")),
            f"{r.score:.3f}",
            f"{r.similarity:.3f}",
        )
        for rank, r in enumerate(recs.items, start=1)
    ]
    header = ("rank", "item_id", "title", "score", "similarity")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    widths[2] = min(widths[2], 50)
    for row in [header, *rows]:
        cells = [c[:50] if i == 2 else c for i, c in enumerate(row)]
        print(
            "  ".join(
                c.rjust(w) if i in (0, 3, 4) else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip(),
            file=out,
        )


def read_user_ids(path: str | pathlib.Path) -> list[str]:
    """User ids of a users file: one per line, blanks and header skipped."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"--users-file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"--users-file {path} is not UTF-8 text (byte {e.start}); "
            "save it as UTF-8 with one user id per line"
        ) from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if ids and ids[0].lower() in ("user_id", '"user_id"'):
        ids = ids[1:]
    return ids


def write_batch(
    rec,
    user_ids: list[str],
    output: str | pathlib.Path,
    k: int,
    exclude_seen: bool = True,
    batch_size: int = 1024,
) -> tuple[int, list[str]]:
    """Writes recommendations of every user to a JSON-lines file.

    Returns:
      (users written, unknown user ids).
    """
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    unknown: list[str] = []
    start = time.perf_counter()
    fd, tmp = tempfile.mkstemp(
        prefix=f".{output.name}.", suffix=".tmp", dir=output.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for n, result in enumerate(
                rec.recommend_batch(user_ids, k, exclude_seen, batch_size),
                start=1,
            ):
                line: dict[str, Any] = {"user_id": result.user_id}
                line["items"] = [
                    {
                        "item_id": r.item_id,
                        "score": round(r.score, 6),
                        "similarity": round(r.similarity, 6),
                    }
                    for r in result.items
                ]
                if not result.known:
                    line["error"] = UNKNOWN_USER
                    unknown.append(result.user_id)
                f.write(json.dumps(line) + "\n")
                if n % (batch_size * 10) == 0:
                    logger.info(
                        "%d of %d users (%.0f users/s)",
                        n,
                        len(user_ids),
                        n / (time.perf_counter() - start),
                    )
        # mkstemp makes the file private; give it the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    logger.info(
        "wrote %d users to %s in %.1f s",
        len(user_ids),
        output,
        time.perf_counter() - start,
    )
    return len(user_ids), unknown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="EXPORT_DIR")
    parser.add_argument("--version", type=int, help="default: newest")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--user", help="a user id")
    mode.add_argument("--history", help="comma-separated item ids")
    mode.add_argument("--similar", help="an item id")
    mode.add_argument("--users-file", help="one user id per line")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--output", help="JSON-lines output (--users-file)")
    parser.add_argument(
        "--include-seen",
        action="store_true",
        help="keep the user's training items",
    )
    parser.add_argument("--exclude", default="", help="item ids to drop")
    parser.add_argument(
        "--filters", help='JSON, e.g. \'{"year": {"min": 1990}}\''
    )
    parser.add_argument("--diversity", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Runs the query described by `args`; raises on invalid input."""
    from serving.recommender import Recommender

    filters = None
    if args.filters:
        try:
            filters = json.loads(args.filters)
        except json.JSONDecodeError as e:
            raise UsageError(f"--filters is not valid JSON: {e}") from e
        if not isinstance(filters, dict):
            raise UsageError("--filters must be a JSON object")
    if args.users_file and not args.output:
        raise UsageError("--users-file needs --output FILE.jsonl")

    rec = Recommender.load(args.model, args.version)

    if args.users_file:
        user_ids = read_user_ids(args.users_file)
        total, unknown = write_batch(
            rec,
            user_ids,
            args.output,
            args.k,
            exclude_seen=not args.include_seen,
            batch_size=args.batch_size,
        )
        if unknown:
            print(
                f"{len(unknown)} of {total} users unknown to the model "
                f"(e.g. {', '.join(unknown[:5])}); written with "
                f'"error": "{UNKNOWN_USER}" and no items',
                file=sys.stderr,
            )
        return 0

    if args.user is not None:
        title = f"user {args.user}"
        recs = rec.recommend(
            args.user,
            args.k,
            exclude_seen=not args.include_seen,
            exclude=_ids(args.exclude),
            filters=filters,
            diversity=args.diversity,
        )
    elif args.history is not None:
        title = f"history {args.history}"
        recs = rec.recommend_for_history(
            _ids(args.history),
            args.k,
            exclude=_ids(args.exclude),
            filters=filters,
            diversity=args.diversity,
        )
    else:
        title = f"items similar to {args.similar}"
        recs = rec.similar_items(args.similar, args.k, filters=filters)

    if args.format == "json":
        print(json.dumps(recs.to_dict(), indent=2), file=out)
    else:
        _print_table(title, recs, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # TensorFlow's C++ start-up notes would bury the one-line errors.
    if not args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        return run(args, sys.stdout)
    except (ServingError, UsageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
