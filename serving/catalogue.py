"""The item catalogue of an export: ids, metadata and metadata filters.

Row i of `items.jsonl`, `item_ids.txt` and `item_embeddings.npy` is the
same item. Filters select rows by metadata:

    {"categories": ["Drama", "Comedy"],   # any of these
     "year": {"min": 1990, "max": 1999},  # numeric range, ends included
     "title": ["Heat"]}                   # exact text, any of these
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from serving.errors import InvalidFilterError

LIST = "list"
NUMERIC = "numeric"
TEXT = "text"


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """How a metadata field can be filtered.

    Attributes:
      name: the key in items.jsonl.
      kind: "list" (any-of over list values), "numeric" ({"min", "max"})
        or "text" (any-of over exact values).
    """

    name: str
    kind: str


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field_kind(values: Sequence[Any]) -> str:
    present = [v for v in values if v is not None]
    if any(isinstance(v, list) for v in present):
        return LIST
    if present and all(_is_number(v) for v in present):
        return NUMERIC
    return TEXT


class Catalogue:
    """Item ids, their metadata and row masks for filters.

    Args:
      item_ids: `[num_items]` ids, in embedding row order.
      metadata: one dict per item (items.jsonl without `item_id`).
    """

    def __init__(
        self, item_ids: Sequence[str], metadata: Sequence[dict[str, Any]]
    ):
        if len(item_ids) != len(metadata):
            raise ValueError(
                f"{len(item_ids)} item ids but {len(metadata)} metadata rows"
            )
        self.item_ids = list(item_ids)
        self.metadata = list(metadata)
        self.row_of = {item_id: i for i, item_id in enumerate(self.item_ids)}

        names = sorted({key for row in self.metadata for key in row})
        self.fields = {
            name: FieldInfo(
                name, _field_kind([row.get(name) for row in self.metadata])
            )
            for name in names
        }

        # Inverted indexes make a filter cost O(matching rows), not a scan
        # of every item's metadata per query.
        self._numeric: dict[str, np.ndarray] = {}
        self._postings: dict[str, dict[str, np.ndarray]] = {}
        for name, info in self.fields.items():
            column = [row.get(name) for row in self.metadata]
            if info.kind == NUMERIC:
                self._numeric[name] = np.array(
                    [math.nan if v is None else float(v) for v in column],
                    dtype=np.float64,
                )
                continue
            postings: dict[str, list[int]] = {}
            for i, value in enumerate(column):
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if v is not None:
                        postings.setdefault(str(v), []).append(i)
            self._postings[name] = {
                v: np.asarray(rows, dtype=np.int64)
                for v, rows in postings.items()
            }

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """Rows of the known ids among `item_ids`; unknown ids are skipped."""
        rows = [self.row_of.get(i) for i in item_ids]
        return np.asarray([r for r in rows if r is not None], dtype=np.int64)

    def validate_filters(self, filters: Mapping[str, Any] | None) -> None:
        """Raises InvalidFilterError unless every condition is usable."""
        for name, condition in (filters or {}).items():
            info = self.fields.get(name)
            if info is None:
                raise InvalidFilterError(
                    f"filters: unknown field {name!r}; valid fields are "
                    f"{sorted(self.fields)}"
                )
            if info.kind == NUMERIC:
                if not isinstance(condition, Mapping) or not condition:
                    raise InvalidFilterError(
                        f"filters.{name}: expected a range such as "
                        f'{{"min": 1990, "max": 1999}}; got {condition!r}'
                    )
                extra = set(condition) - {"min", "max"}
                if extra:
                    raise InvalidFilterError(
                        f"filters.{name}: only 'min' and 'max' are allowed; "
                        f"got {sorted(extra)}"
                    )
                for end, value in condition.items():
                    if value is not None and not _is_number(value):
                        raise InvalidFilterError(
                            f"filters.{name}.{end}: expected a number; got "
                            f"{value!r}"
                        )
            elif isinstance(condition, str):
                continue
            elif not isinstance(condition, Sequence) or not all(
                isinstance(v, str | int | float) for v in condition
            ):
                raise InvalidFilterError(
                    f"filters.{name}: expected a list of values (any of "
                    f"them matches); got {condition!r}"
                )

    def mask(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Rows matching every condition of `filters`, or None for no filter.

        Args:
          filters: field -> condition, as in the module docstring. All
            conditions must hold; within a list, any value matches.

        Returns:
          `[num_items]` bool, or None when `filters` is empty.

        Raises:
          InvalidFilterError: for an unknown field or malformed condition.
        """
        if not filters:
            return None
        self.validate_filters(filters)
        keep = np.ones(len(self), dtype=bool)
        for name, condition in filters.items():
            if self.fields[name].kind == NUMERIC:
                column = self._numeric[name]
                # NaN (a missing value) fails both comparisons.
                lo = condition.get("min")
                hi = condition.get("max")
                ok = ~np.isnan(column)
                if lo is not None:
                    ok &= column >= lo
                if hi is not None:
                    ok &= column <= hi
            else:
                wanted = (
                    [condition] if isinstance(condition, str) else condition
                )
                ok = np.zeros(len(self), dtype=bool)
                postings = self._postings[name]
                for value in wanted:
                    rows = postings.get(str(value))
                    if rows is not None:
                        ok[rows] = True
            keep &= ok
        return keep
