"""The canonical shape of interaction logs and side tables.

Whatever the source (CSV, TSV, Parquet, JSON lines, TFDS), loading ends in
the same columnar form, held as `pyarrow.Table`s:

- interactions: ``user_id`` (string), ``item_id`` (string), ``timestamp``
  (int64 Unix seconds), ``weight`` (float32, 1.0 when the log has none) and
  ``row`` (int64, the 1-based data row in its source, used in error
  messages and to keep file order among equal timestamps);
- items: ``item_id`` (string) plus optional ``title`` (string),
  ``categories`` (list of strings) and numeric columns (float32);
- users: ``user_id`` (string) plus categorical columns (string).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

INTERACTION_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.int64()),
        ("weight", pa.float32()),
        ("row", pa.int64()),
    ]
)


class DataError(ValueError):
    """A problem in the user's data, reported in one readable message.

    Command-line entry points turn it into exit status 2 without a
    traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ):
        self.source = source
        self.row = row
        self.column = column
        where = []
        if source is not None:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


@dataclasses.dataclass(frozen=True)
class ColumnMap:
    """Which source columns hold the canonical fields.

    Attributes:
      user: Column with user ids (any type; read as strings).
      item: Column with item ids (any type; read as strings).
      time: Column with Unix seconds or ISO 8601 times; None when the log
        has no time (file order then stands in for time).
      weight: Optional column with a rating or weight.
      item_id: Id column of the item table (defaults to ``item``).
      item_text: Text column of the item table, e.g. a title.
      item_categories: Multi-valued category column of the item table.
      category_sep: Separator of the category values.
      item_numeric: Numeric columns of the item table, e.g. a year.
      user_id: Id column of the user table (defaults to ``user``).
      user_features: Categorical columns of the user table; None takes
        every column but the id.
    """

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = "timestamp"
    weight: str | None = None
    item_id: str | None = None
    item_text: str | None = None
    item_categories: str | None = None
    category_sep: str = "|"
    item_numeric: tuple[str, ...] = ()
    user_id: str | None = None
    user_features: tuple[str, ...] | None = None

    @property
    def item_key(self) -> str:
        return self.item_id or self.item

    @property
    def user_key(self) -> str:
        return self.user_id or self.user


@dataclasses.dataclass
class ItemTable:
    """Item side table in canonical form.

    Attributes:
      table: ``item_id`` plus the optional feature columns.
      text: Name of the text column (``title``) or None.
      categories: Name of the list-of-strings column (``categories``) or None.
      numeric: Names of the float32 numeric columns.
    """

    table: pa.Table
    text: str | None = None
    categories: str | None = None
    numeric: tuple[str, ...] = ()

    @property
    def ids(self) -> list[str]:
        return self.table.column("item_id").to_pylist()


@dataclasses.dataclass
class UserTable:
    """User side table: ``user_id`` plus categorical string columns."""

    table: pa.Table
    features: tuple[str, ...] = ()


@dataclasses.dataclass
class LoadReport:
    """What loading found and did, for logs and the run's metadata."""

    rows_read: int = 0
    duplicates_dropped: int = 0
    unknown_items: int = 0
    unknown_items_dropped: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LoadedData:
    """Interactions with their optional side tables."""

    interactions: pa.Table
    items: ItemTable | None = None
    users: UserTable | None = None
    report: LoadReport = dataclasses.field(default_factory=LoadReport)
