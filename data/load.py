"""Read an interaction log and its side tables into the canonical schema.

Sources are a file (``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``,
``.ndjson`` or ``.json`` holding JSON lines; CSV, TSV and JSON lines may be
``.gz``-compressed), a folder of shards in one of those formats, or a
TensorFlow Datasets entry written ``tfds:<name>``.

Reading is columnar (pyarrow) and every check is vectorised, so a log of
ten million rows loads in seconds. Each problem found in the user's data
raises a `DataError` naming the file, the row and the column.

Example:

    loaded = load("ratings.csv", items="movies.csv",
                  columns=ColumnMap(weight="rating", item_text="title"))
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from data.schema import (
    INTERACTION_SCHEMA,
    ColumnMap,
    DataError,
    ItemTable,
    LoadedData,
    LoadReport,
    UserTable,
)

logger = logging.getLogger(__name__)

TFDS_PREFIX = "tfds:"

# File suffix (after any ".gz") -> reader format.
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
}

UNKNOWN_ITEM_POLICIES = ("keep", "drop")
DEFAULT_COLUMNS = ColumnMap()

ROW_NOTE = "rows count data records from 1, not counting a header line"

_NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_ISO_NAIVE_RE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?$"
)
_ISO_ZONED_RE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
)

# Reading in large blocks keeps the per-block overhead of wide files low.
_CSV_BLOCK_BYTES = 16 << 20
_EXAMPLES_SHOWN = 5


# ---------------------------------------------------------------------------
# Public entry point.
# ---------------------------------------------------------------------------


def load(
    interactions: str,
    items: str | None = None,
    users: str | None = None,
    columns: ColumnMap = DEFAULT_COLUMNS,
    unknown_items: str = "keep",
) -> LoadedData:
    """Loads and validates an interaction log and optional side tables.

    Args:
      interactions: Path of a file or folder of shards, or ``tfds:<name>``.
      items: Optional item table, in any supported form.
      users: Optional user table, in any supported form.
      columns: Which source columns hold the canonical fields.
      unknown_items: What to do with interactions whose item is missing from
        the item table: ``"keep"`` or ``"drop"``. Either way they are
        counted in the report and named in a warning.

    Returns:
      The canonical interactions (`INTERACTION_SCHEMA`, in file order), the
      side tables and a `LoadReport`.

    Raises:
      DataError: The data is missing, unreadable or malformed; the message
        names the file, row and column and says how to fix it.
    """
    if unknown_items not in UNKNOWN_ITEM_POLICIES:
        raise DataError(
            f"unknown_items must be one of {UNKNOWN_ITEM_POLICIES}, got "
            f"{unknown_items!r}; pass --unknown-items keep or "
            "--unknown-items drop"
        )
    report = LoadReport()

    # Interactions, canonical and in file order.
    if interactions.startswith(TFDS_PREFIX):
        from data import tfds_source

        columns = tfds_source.default_columns(interactions, columns, "log")
    table = read_interactions(interactions, columns)
    report.rows_read = table.num_rows
    table, dropped_rows = drop_duplicates(table)
    report.duplicates_dropped = len(dropped_rows)
    if report.duplicates_dropped:
        message = (
            f"{interactions}: dropped {report.duplicates_dropped} duplicate "
            f"rows (same user, item and timestamp; {_rows(dropped_rows)}); "
            "the first of each is kept"
        )
        logger.warning(message)
        report.warnings.append(message)

    # Side tables.
    item_table = None
    if items is not None:
        if items.startswith(TFDS_PREFIX):
            from data import tfds_source

            columns = tfds_source.default_columns(items, columns, "items")
        item_table = read_items(items, columns, report.warnings)
        table = _check_unknown_items(
            table, item_table, interactions, items, unknown_items, report
        )
    user_table = None
    if users is not None:
        user_table = read_users(users, columns)
        _check_unknown_users(table, user_table, users, report)

    logger.info("Loaded %d interactions from %s.", table.num_rows, interactions)
    return LoadedData(
        interactions=table, items=item_table, users=user_table, report=report
    )


def read_interactions(source: str, columns: ColumnMap) -> pa.Table:
    """Reads a log into `INTERACTION_SCHEMA` without dropping anything.

    Args:
      source: Path of a file or folder of shards, or ``tfds:<name>``.
      columns: Names of the user, item, time and weight columns.

    Returns:
      The canonical table in file order; ``row`` runs from 1 across shards.

    Raises:
      DataError: A column is missing or a value is malformed.
    """
    wanted = {columns.user: "--user-col", columns.item: "--item-col"}
    if columns.time is not None:
        wanted[columns.time] = "--time-col"
    if columns.weight is not None:
        wanted[columns.weight] = "--weight-col"

    parts = []
    offset = 0
    for name, raw in read_raw(source, wanted, role="interaction log"):
        if raw.num_rows == 0:
            continue
        parts.append(_canonical_interactions(raw, name, columns, offset))
        offset += raw.num_rows
    if offset == 0:
        raise DataError(
            "has no data rows; expected a header line followed by one "
            "interaction per line",
            source=source,
        )
    return pa.concat_tables(parts).combine_chunks()


def read_items(
    source: str, columns: ColumnMap, warnings: list[str] | None = None
) -> ItemTable:
    """Reads the item table into canonical form.

    Args:
      source: Path of a file or folder of shards, or ``tfds:<name>``.
      columns: ``item_key`` names the id column; ``item_text``,
        ``item_categories`` and ``item_numeric`` the feature columns.
      warnings: Collects warnings (values that are not numbers).

    Returns:
      An `ItemTable` with ``item_id`` and the requested features.

    Raises:
      DataError: A column is missing, an id is empty or repeated, or a
        numeric value is malformed.
    """
    key = columns.item_key
    wanted = {key: "--item-id-col"}
    if columns.item_text is not None:
        wanted[columns.item_text] = "--item-text-col"
    if columns.item_categories is not None:
        wanted[columns.item_categories] = "--item-category-col"
    for name in columns.item_numeric:
        wanted[name] = "--item-numeric-cols"

    warnings = [] if warnings is None else warnings
    parts = []
    for name, raw in read_raw(source, wanted, role="item table"):
        arrays = {"item_id": _ids(raw, key, name)}
        if columns.item_text is not None:
            text = _as_string(
                raw.column(columns.item_text), name, columns.item_text
            )
            arrays["title"] = pc.fill_null(text, "")
        if columns.item_categories is not None:
            arrays["categories"] = _categories(
                raw.column(columns.item_categories), columns.category_sep
            )
        for column in columns.item_numeric:
            arrays[column] = _item_numeric(
                raw.column(column), name, column, warnings
            )
        parts.append(pa.table(arrays))
    table = _concat_side(parts, source)
    _check_unique(table.column("item_id"), source, key, "--item-id-col")
    return ItemTable(
        table=table,
        text="title" if columns.item_text is not None else None,
        categories=(
            "categories" if columns.item_categories is not None else None
        ),
        numeric=tuple(columns.item_numeric),
    )


def read_users(source: str, columns: ColumnMap) -> UserTable:
    """Reads the user table: an id column plus categorical string features.

    Args:
      source: Path of a file or folder of shards, or ``tfds:<name>``.
      columns: ``user_key`` names the id column; ``user_features`` the
        feature columns (None takes every other column).

    Returns:
      A `UserTable`; features are strings, missing values are ``""``.

    Raises:
      DataError: A column is missing or an id is empty or repeated.
    """
    key = columns.user_key
    wanted = {key: "--user-id-col"}
    for name in columns.user_features or ():
        wanted[name] = "--user-feature-cols"
    every_column = columns.user_features is None

    parts = []
    features: tuple[str, ...] = tuple(columns.user_features or ())
    for name, raw in read_raw(
        source, wanted, role="user table", every_column=every_column
    ):
        if every_column:
            features = tuple(c for c in raw.column_names if c != key)
        arrays = {"user_id": _ids(raw, key, name)}
        for column in features:
            if column == "user_id":
                raise DataError(
                    "a feature column may not be called 'user_id' unless it "
                    "is the id column; rename it or pass --user-id-col",
                    source=name,
                    column=column,
                )
            text = _as_string(raw.column(column), name, column)
            arrays[column] = pc.fill_null(text, "")
        parts.append(pa.table(arrays))
    table = _concat_side(parts, source)
    _check_unique(table.column("user_id"), source, key, "--user-id-col")
    return UserTable(table=table, features=features)


def source_columns(source: str) -> list[str]:
    """Names of the columns of a file or folder, read from its header only.

    Used by the command line to pick up conventional column names (such as
    ``title``) without a flag. TFDS entries and JSON lines report the fields
    of their first record.

    Raises:
      DataError: The source does not exist or has an unknown format.
    """
    if source.startswith(TFDS_PREFIX):
        from data import tfds_source

        return tfds_source.field_names(source)
    files, fmt = resolve_files(source)
    path = files[0]
    if fmt in ("csv", "tsv"):
        return _csv_header(path, _DELIMITERS[fmt])
    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    with _open_text(path) as lines:
        first = lines.readline()
    if not first.strip():
        return []
    return pa_json.read_json(io.BytesIO(first)).column_names


# ---------------------------------------------------------------------------
# Finding and reading files.
# ---------------------------------------------------------------------------

_DELIMITERS = {"csv": ",", "tsv": "\t"}


def file_format(path: Path) -> str | None:
    """The reader format of a path from its suffix, or None if unknown."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        if suffixes and FORMATS.get(suffixes[-1]) == "parquet":
            return None  # Parquet compresses internally.
    return FORMATS.get(suffixes[-1]) if suffixes else None


def resolve_files(source: str) -> tuple[list[Path], str]:
    """The files of a source (one file, or a folder's shards) and format.

    Raises:
      DataError: The path does not exist, has an unknown suffix, or the
        folder holds no data files or files of several formats.
    """
    path = Path(source)
    known = ", ".join(sorted(FORMATS))
    if not path.exists():
        raise DataError(
            "no such file or folder; check the path given on the command line",
            source=source,
        )
    if path.is_file():
        fmt = file_format(path)
        if fmt is None:
            raise DataError(
                f"unknown file type; expected one of {known} (CSV, TSV and "
                "JSON lines may end in .gz)",
                source=source,
            )
        return [path], fmt

    shards = sorted(
        p
        for p in path.iterdir()
        if p.is_file()
        and not p.name.startswith((".", "_"))
        and file_format(p) is not None
    )
    if not shards:
        raise DataError(
            f"folder holds no data files; expected shards ending in {known}",
            source=source,
        )
    formats = {file_format(p) for p in shards}
    if len(formats) > 1:
        raise DataError(
            f"folder mixes file formats {sorted(formats)}; keep shards of "
            "one format in a folder",
            source=source,
        )
    return shards, formats.pop()


def read_raw(
    source: str,
    wanted: Mapping[str, str],
    *,
    role: str,
    every_column: bool = False,
) -> list[tuple[str, pa.Table]]:
    """Reads the wanted columns of every file of a source, as stored.

    CSV and TSV columns come back as strings, so ids keep their leading
    zeros; Parquet, JSON lines and TFDS keep their own types.

    Args:
      source: Path of a file or folder of shards, or ``tfds:<name>``.
      wanted: Column name -> the command-line flag that names it, used to
        say how to fix a missing column.
      role: What the source is ("interaction log", ...), for messages.
      every_column: Read all columns, not only the wanted ones.

    Returns:
      (file name for messages, table) per file, in name order.

    Raises:
      DataError: A wanted column is missing or a file cannot be parsed.
    """
    if source.startswith(TFDS_PREFIX):
        from data import tfds_source

        fields = None if every_column else list(wanted)
        table = tfds_source.read_tfds(source, fields)
        _check_columns(table.column_names, wanted, source, role)
        return [(source, table)]

    files, fmt = resolve_files(source)
    tables = []
    for path in files:
        name = str(path)
        try:
            table = _read_one(path, fmt, wanted, role, every_column)
        except (OSError, EOFError, zlib.error) as error:
            # unreadable, or a damaged or truncated gzip stream
            raise DataError(
                f"cannot read the file ({type(error).__name__}: {error}); "
                "check that it is complete and readable",
                source=name,
            ) from None
        tables.append((name, table))
    return tables


def _read_one(
    path: Path,
    fmt: str,
    wanted: Mapping[str, str],
    role: str,
    every_column: bool,
) -> pa.Table:
    if fmt in ("csv", "tsv"):
        return _read_csv(path, fmt, wanted, role, every_column)
    if fmt == "parquet":
        return _read_parquet(path, wanted, role, every_column)
    table = _read_json_lines(path)
    _check_columns(table.column_names, wanted, str(path), role)
    return table if every_column else table.select(list(wanted))


def _check_columns(
    found: Sequence[str], wanted: Mapping[str, str], source: str, role: str
) -> None:
    missing = [c for c in wanted if c not in found]
    if not missing:
        return
    column = missing[0]
    flag = wanted[column]
    shown = ", ".join(found) if found else "(none)"
    raise DataError(
        f"the {role} has no column '{column}'; columns found: {shown}. "
        f"Name the right column with {flag}",
        source=source,
        column=column,
    )


def _open_text(path: Path) -> io.BufferedIOBase:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _csv_header(path: Path, delimiter: str) -> list[str]:
    import csv

    with _open_text(path) as raw:
        first = raw.readline()
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"header line is not valid UTF-8 (byte offset {error.start}); "
            "save the file as UTF-8",
            source=str(path),
        ) from None
    if not line.strip():
        return []
    return next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter))


def _read_csv(
    path: Path,
    fmt: str,
    wanted: Mapping[str, str],
    role: str,
    every_column: bool,
) -> pa.Table:
    name = str(path)
    delimiter = _DELIMITERS[fmt]
    header = _csv_header(path, delimiter)
    if not header:
        raise DataError(
            "file is empty; expected a header line naming the columns, "
            "then one record per line",
            source=name,
        )
    _check_columns(header, wanted, name, role)
    names = header if every_column else list(wanted)

    def read(kind: pa.DataType) -> pa.Table:
        return pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            convert_options=pa_csv.ConvertOptions(
                include_columns=names,
                column_types={c: kind for c in names},
                strings_can_be_null=False,
            ),
        )

    try:
        return read(pa.string())
    except pa.ArrowInvalid as error:
        if "UTF8" not in str(error):
            raise _parse_error(path, delimiter, error) from None
    # Re-read as bytes to find the first row that is not UTF-8.
    raw = read(pa.binary())
    for column in names:
        _as_string(raw.column(column), name, column)
    raise DataError("is not valid UTF-8; save it as UTF-8", source=name)


def _parse_error(path: Path, delimiter: str, error: Exception) -> DataError:
    """Names the line of a CSV parse error, found by a careful re-read."""
    bad: list[int | None] = []

    def record(row: object) -> str:
        bad.append(getattr(row, "number", None))
        return "skip"

    try:
        pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, invalid_row_handler=record
            ),
        )
    except pa.ArrowInvalid:
        pass
    where = f"line {bad[0]}: " if bad and bad[0] is not None else ""
    return DataError(
        f"cannot parse {where}{error}. Check the delimiter ('{delimiter}') "
        "and the quoting of that line",
        source=str(path),
    )


def _read_parquet(
    path: Path, wanted: Mapping[str, str], role: str, every_column: bool
) -> pa.Table:
    name = str(path)
    try:
        found = list(pq.read_schema(path).names)
    except pa.ArrowInvalid as error:
        raise DataError(
            f"cannot read as Parquet ({error}); is the file complete, and "
            "is it Parquet? (the format comes from the file name's suffix)",
            source=name,
        ) from None
    _check_columns(found, wanted, name, role)
    try:
        return pq.read_table(
            path, columns=None if every_column else list(wanted)
        )
    except pa.ArrowInvalid as error:
        raise DataError(
            f"cannot read its data ({error}); the file may be truncated or "
            "damaged: write it again",
            source=name,
        ) from None


def _read_json_lines(path: Path) -> pa.Table:
    name = str(path)
    if _is_empty(path):
        raise DataError(
            "file is empty; expected one JSON object per line",
            source=name,
        )
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as stream:
                data = stream.read()
            return pa_json.read_json(io.BytesIO(data))
        return pa_json.read_json(path)
    except pa.ArrowInvalid as error:
        message = str(error)
        if "UTF8" in message or "UTF-8" in message:
            offset = _first_bad_utf8(path)
            raise DataError(
                f"is not valid UTF-8 ({offset}); save it as UTF-8",
                source=name,
            ) from None
        raise DataError(
            f"cannot parse as JSON lines (one object per line): {message}. "
            "Give every field the same type on every line (quote ids)",
            source=name,
        ) from None


def _is_empty(path: Path) -> bool:
    """True when a (possibly gzipped) file holds only white space."""
    with _open_text(path) as stream:
        while chunk := stream.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _first_bad_utf8(path: Path) -> str:
    """'line L, byte offset B' of the first invalid UTF-8 byte."""
    with _open_text(path) as stream:
        data = stream.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return f"line {line}, byte offset {error.start}"
    return "position unknown"


# ---------------------------------------------------------------------------
# Column conversions.
# ---------------------------------------------------------------------------


def _canonical_interactions(
    raw: pa.Table, source: str, columns: ColumnMap, offset: int
) -> pa.Table:
    n = raw.num_rows
    row = pa.array(np.arange(offset + 1, offset + n + 1, dtype=np.int64))
    if columns.time is None:
        timestamp = row
    else:
        timestamp = _timestamps(raw.column(columns.time), source, columns.time)
    if columns.weight is None:
        weight = pa.array(np.ones(n, dtype=np.float32))
    else:
        weight = _weights(raw.column(columns.weight), source, columns.weight)
    return pa.Table.from_arrays(
        [
            _ids(raw, columns.user, source),
            _ids(raw, columns.item, source),
            timestamp,
            weight,
            row,
        ],
        schema=INTERACTION_SCHEMA,
    )


def _fail_at(
    index: int, message: str, source: str, column: str | None
) -> DataError:
    return DataError(
        f"{message} ({ROW_NOTE})", source=source, row=index + 1, column=column
    )


def _first_false(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first False or null in a boolean array, or None."""
    mask = pc.fill_null(mask, False)
    if pc.all(mask).as_py() is not False:
        return None
    return pc.index(mask, False).as_py()


def _first_failure(
    values: pa.ChunkedArray | pa.Array, convert: Callable[..., object]
) -> int:
    """Index of the first element that `convert` rejects, by bisection.

    The whole array is known to fail, so a failure lies in [lo, hi).
    """
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(values.slice(lo, mid - lo))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
        else:
            lo = mid
    return lo


def _as_string(
    values: pa.ChunkedArray, source: str, column: str | None
) -> pa.ChunkedArray:
    """Casts any column to strings, locating invalid UTF-8 by row."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # The JSON and Parquet readers let invalid UTF-8 through.
        try:
            values.validate(full=True)
        except pa.ArrowInvalid:
            index = _first_failure(values, lambda v: v.validate(full=True))
            raise _fail_at(
                index,
                "value is not valid UTF-8 text; save the file as UTF-8",
                source,
                column,
            ) from None
        return values.cast(pa.string())
    if pa.types.is_nested(kind):
        raise DataError(
            f"holds nested values ({kind}); expected text or numbers in "
            "each row",
            source=source,
            column=column,
        )
    try:
        return values.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise DataError(
                f"cannot be read as text ({kind})",
                source=source,
                column=column,
            ) from None
    index = _first_failure(values, lambda v: v.cast(pa.string()))
    raise _fail_at(
        index,
        "value is not valid UTF-8 text; save the file as UTF-8",
        source,
        column,
    )


def _ids(raw: pa.Table, column: str, source: str) -> pa.ChunkedArray:
    """An id column as strings; empty or missing ids are an error."""
    values = raw.column(column)
    kind = values.type
    if pa.types.is_floating(kind):
        # Parquet and JSON store integer ids with missing values as floats;
        # "7" is the id the user means, not "7.0".
        whole = pc.equal(pc.floor(values), values)
        if pc.all(pc.fill_null(whole, True)).as_py():
            values = values.cast(pa.int64())
    values = _as_string(values, source, column)

    # Checking the distinct ids is much cheaper than checking every row.
    distinct = pc.unique(values)
    blank = distinct.filter(
        pc.fill_null(
            pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(distinct)), 0),
            True,
        )
    )
    if values.null_count or len(blank):
        bad = _first_false(
            pc.invert(pc.fill_null(pc.is_in(values, value_set=blank), True))
        )
        raise _fail_at(
            bad,
            "id is empty; every row needs an id. Remove the row or fill in "
            "the id",
            source,
            column,
        )
    return values


def _matches(values: pa.ChunkedArray, pattern: str) -> pa.ChunkedArray:
    return pc.fill_null(pc.match_substring_regex(values, pattern), False)


def _timestamps(
    values: pa.ChunkedArray, source: str, column: str
) -> pa.ChunkedArray:
    """Any time column -> int64 Unix seconds (UTC)."""
    kind = values.type
    hint = (
        "expected Unix seconds (e.g. 881250949) or an ISO 8601 time (e.g. "
        "2021-03-04T05:06:07Z or 2021-03-04); fix the value or pass "
        "--time-col none to use file order as time"
    )
    bad = _first_false(pc.is_valid(values))
    if bad is not None:
        raise _fail_at(bad, f"timestamp is missing; {hint}", source, column)
    if pa.types.is_integer(kind):
        return values.cast(pa.int64())
    if pa.types.is_floating(kind):
        bad = _first_false(pc.is_finite(values))
        if bad is not None:
            value = values[bad].as_py()
            raise _fail_at(
                bad, f"bad timestamp {value!r}; {hint}", source, column
            )
        return pc.floor(values).cast(pa.int64())
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        seconds = values.cast(pa.timestamp("s", tz=getattr(kind, "tz", None)))
        return seconds.cast(pa.int64())
    values = _as_string(values, source, column)
    try:
        # Fast path: whole Unix seconds, the common case for large logs.
        return values.cast(pa.int64())
    except pa.ArrowInvalid:
        return _parse_time_strings(values, source, column, hint)


def _parse_time_strings(
    values: pa.ChunkedArray, source: str, column: str, hint: str
) -> pa.ChunkedArray:
    text = pc.utf8_trim_whitespace(values)
    number = _matches(text, _NUMBER_RE)
    zoned = _matches(text, _ISO_ZONED_RE)
    naive = _matches(text, _ISO_NAIVE_RE)
    bad = _first_false(pc.or_(pc.or_(number, zoned), naive))
    if bad is not None:
        value = values[bad].as_py()
        raise _fail_at(
            bad, f"cannot parse timestamp {value!r}; {hint}", source, column
        )

    def convert(part: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
        if pa.types.is_floating(kind):
            return pc.floor(part.cast(kind)).cast(pa.int64())
        # Sub-second digits are truncated, as Unix seconds have none.
        parsed = part.cast(kind)
        seconds = pc.cast(parsed, pa.timestamp("s", tz=kind.tz), safe=False)
        return seconds.cast(pa.int64())

    result = pa.nulls(len(values), pa.int64())
    for mask, kind in (
        (number, pa.float64()),
        (zoned, pa.timestamp("ns", tz="UTC")),
        (naive, pa.timestamp("ns")),
    ):
        if not pc.any(mask).as_py():
            continue
        part = pc.if_else(mask, text, pa.scalar(None, pa.string()))
        try:
            seconds = convert(part, kind)
        except pa.ArrowInvalid:
            bad = _first_failure(part, lambda v, k=kind: convert(v, k))
            value = values[bad].as_py()
            raise _fail_at(
                bad,
                f"cannot parse timestamp {value!r} (out of range or not a "
                f"real date); {hint}",
                source,
                column,
            ) from None
        result = pc.coalesce(result, seconds)
    return result


def _weights(
    values: pa.ChunkedArray, source: str, column: str
) -> pa.ChunkedArray:
    """A weight column -> float32; missing or non-numeric is an error."""
    kind = values.type
    hint = f"fix the value or leave out --weight-col (now '{column}')"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        bad = _first_false(pc.is_valid(values))
        if bad is not None:
            raise _fail_at(bad, f"weight is missing; {hint}", source, column)
        return values.cast(pa.float32())

    values = _as_string(values, source, column)
    try:
        # Fast path; the regular expression below only locates the problem.
        numbers = values.cast(pa.float64())
        finite = pc.is_finite(numbers)
    except pa.ArrowInvalid:
        text = pc.utf8_trim_whitespace(values)
        finite = _matches(text, _NUMBER_RE)
        numbers = None
    bad = _first_false(finite)
    if bad is not None:
        value = values[bad].as_py()
        raise _fail_at(
            bad, f"weight {value!r} is not a number; {hint}", source, column
        )
    if numbers is None:
        numbers = pc.utf8_trim_whitespace(values).cast(pa.float64())
    return numbers.cast(pa.float32())


def _item_numeric(
    values: pa.ChunkedArray, source: str, column: str, warnings: list[str]
) -> pa.ChunkedArray:
    """An item feature column -> float32; what is not a number is NaN.

    Item tables often mark unknown values with words ("unknown", "N/A"), so
    those become NaN with a warning rather than stopping the run.
    """
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return pc.fill_null(values.cast(pa.float64()), np.nan).cast(
            pa.float32()
        )
    if pa.types.is_boolean(kind):
        return values.cast(pa.float32())

    text = pc.utf8_trim_whitespace(_as_string(values, source, column))
    number = _matches(text, _NUMBER_RE)
    bad_mask = pc.and_(pc.invert(number), pc.not_equal(text, ""))
    bad_mask = pc.fill_null(bad_mask, False)
    bad = _first_false(pc.invert(bad_mask))
    if bad is not None:
        count = pc.sum(bad_mask).as_py()
        message = (
            f"{source}, row {bad + 1}, column '{column}': {count} values are "
            f"not numbers (first: {values[bad].as_py()!r}); they become NaN"
        )
        logger.warning(message)
        warnings.append(message)
    text = pc.if_else(number, text, pa.scalar(None, pa.string()))
    return pc.fill_null(text.cast(pa.float64()), np.nan).cast(pa.float32())


def _categories(values: pa.ChunkedArray, sep: str) -> pa.Array:
    """Splits a category column on `sep` into list<string>, no empties."""
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        lists = values.combine_chunks()
        inner = lists.flatten().cast(pa.string())
        parents = pc.list_parent_indices(lists)
    else:
        text = pc.fill_null(values.cast(pa.string()), "").combine_chunks()
        lists = pc.split_pattern(text, sep)
        inner = lists.flatten()
        parents = pc.list_parent_indices(lists)
    inner = pc.utf8_trim_whitespace(pc.fill_null(inner, ""))
    keep = pc.greater(pc.utf8_length(inner), 0)
    kept = inner.filter(keep)
    counts = np.bincount(
        parents.filter(keep).to_numpy(), minlength=len(lists)
    ).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), kept)


def _concat_side(parts: list[pa.Table], source: str) -> pa.Table:
    parts = [p for p in parts if p.num_rows]
    if not parts:
        raise DataError(
            "has no data rows; expected a header line and one row per id",
            source=source,
        )
    return pa.concat_tables(parts).combine_chunks()


def _check_unique(
    ids: pa.ChunkedArray, source: str, column: str, flag: str
) -> None:
    if len(pc.unique(ids)) == len(ids):
        return
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    first = repeated.field("values")[0].as_py()
    rows = np.flatnonzero(pc.equal(ids, first).to_numpy(zero_copy_only=False))
    raise DataError(
        f"id {first!r} appears {len(rows)} times (rows {rows[0] + 1} and "
        f"{rows[1] + 1}; {ROW_NOTE}); each id needs exactly one row. Remove "
        f"the repeats or check {flag}",
        source=source,
        row=int(rows[1]) + 1,
        column=column,
    )


# ---------------------------------------------------------------------------
# Cleaning the log.
# ---------------------------------------------------------------------------


def drop_duplicates(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Drops repeated (user, item, timestamp) rows, keeping the first.

    Returns:
      The table in its original order, and the file rows (the ``row``
      column) of the rows dropped, in file order.
    """
    none = np.zeros(0, np.int64)
    if table.num_rows < 2:
        return table, none

    # Small integer codes for users and items make one int64 sort key.
    users = _codes(table.column("user_id"))
    items = _codes(table.column("item_id"))
    times = table.column("timestamp").to_numpy()
    num_items = int(items.max()) + 1
    span = int(times.max()) - int(times.min()) + 1
    pairs = users * num_items + items
    if int(pairs.max()) < np.iinfo(np.int64).max // span:
        key = pairs * span + (times - times.min())
        order = np.argsort(key)
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    else:
        order = np.lexsort((times, pairs))
        pairs, times = pairs[order], times[order]
        starts = np.flatnonzero(
            np.r_[True, (pairs[1:] != pairs[:-1]) | (times[1:] != times[:-1])]
        )
    if len(starts) == table.num_rows:
        return table, none

    # The sort is not stable, so keep the earliest row of each group.
    keep = np.zeros(table.num_rows, dtype=bool)
    keep[np.minimum.reduceat(order, starts)] = True
    rows = table.column("row").to_numpy()[~keep]
    return table.filter(pa.array(keep)), rows


def _codes(values: pa.ChunkedArray) -> np.ndarray:
    """Dense int64 codes of a string column (equal strings, equal codes)."""
    encoded = pc.dictionary_encode(values.combine_chunks())
    return encoded.indices.to_numpy().astype(np.int64)


def _rows(rows: np.ndarray) -> str:
    """'row 4' or 'rows 4, 9, 12, ...': the first few file rows."""
    shown = ", ".join(str(r) for r in rows[:_EXAMPLES_SHOWN])
    more = ", ..." if len(rows) > _EXAMPLES_SHOWN else ""
    word = "row" if len(rows) == 1 else "rows"
    return f"{word} {shown}{more} ({ROW_NOTE})"


def _check_unknown_items(
    table: pa.Table,
    items: ItemTable,
    log_source: str,
    item_source: str,
    policy: str,
    report: LoadReport,
) -> pa.Table:
    known = pc.is_in(
        table.column("item_id"), value_set=items.table.column("item_id")
    )
    unknown = table.num_rows - pc.sum(known).as_py()
    report.unknown_items = unknown
    if unknown == 0:
        return table
    examples = pc.unique(table.column("item_id").filter(pc.invert(known)))
    shown = ", ".join(repr(v) for v in examples[:_EXAMPLES_SHOWN].to_pylist())
    rows = table.column("row").filter(pc.invert(known)).to_numpy()
    action = "dropped" if policy == "drop" else "kept"
    message = (
        f"{log_source}: {unknown} interactions ({len(examples)} distinct "
        f"items, e.g. {shown}; {_rows(rows)}, column 'item_id') name items "
        f"missing from {item_source}; {action} (--unknown-items {policy})"
    )
    logger.warning(message)
    report.warnings.append(message)
    if policy == "drop":
        report.unknown_items_dropped = True
        return table.filter(known)
    return table


def _check_unknown_users(
    table: pa.Table, users: UserTable, user_source: str, report: LoadReport
) -> None:
    known = pc.is_in(
        table.column("user_id"), value_set=users.table.column("user_id")
    )
    unknown = table.num_rows - pc.sum(known).as_py()
    if unknown:
        message = (
            f"{unknown} interactions name users missing from {user_source}; "
            "their user features will be empty"
        )
        logger.warning(message)
        report.warnings.append(message)
