"""Finding and reading an export directory (docs/export-format.md).

    EXPORT_DIR/
      1/  saved_model.pb  variables/  metadata.json  item_ids.txt
          item_embeddings.npy  items.jsonl
      2/  ...

Versions are integer directory names; the newest is served by default.
A version directory without metadata.json is taken to be still being
written and is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import numpy as np

from serving.errors import ExportFormatError

logger = logging.getLogger(__name__)

METADATA = "metadata.json"
ITEM_IDS = "item_ids.txt"
ITEM_EMBEDDINGS = "item_embeddings.npy"
ITEMS = "items.jsonl"
SAVED_MODEL = "saved_model.pb"
REQUIRED = (SAVED_MODEL, METADATA, ITEM_IDS, ITEM_EMBEDDINGS, ITEMS)


def list_versions(root: str | pathlib.Path) -> list[int]:
    """Complete versions under `root`, oldest first."""
    root = pathlib.Path(root)
    if not root.is_dir():
        return []
    versions = []
    for child in root.iterdir():
        if child.name.isdigit() and (child / METADATA).is_file():
            versions.append(int(child.name))
    return sorted(versions)


def newest_version(root: str | pathlib.Path) -> int | None:
    """The largest complete version under `root`, or None."""
    versions = list_versions(root)
    return versions[-1] if versions else None


def resolve(
    path: str | pathlib.Path, version: int | None = None
) -> tuple[int, pathlib.Path]:
    """(version, version directory) for an export root or version dir.

    Args:
      path: EXPORT_DIR holding integer versions, or one version directory.
      version: a version under `path`; None picks the newest.

    Raises:
      ExportFormatError: if the directory or version does not exist.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ExportFormatError(
            f"export directory {path} does not exist; pass the --output "
            "directory of `python -m training.export`"
        )
    if (path / SAVED_MODEL).is_file() and path.name.isdigit():
        if version is not None and version != int(path.name):
            raise ExportFormatError(
                f"{path} is version {path.name}, not {version}; pass the "
                "export root to choose a version"
            )
        return int(path.name), path
    versions = list_versions(path)
    if not versions:
        raise ExportFormatError(
            f"{path} holds no version directories (integer names with a "
            f"{METADATA}); run `python -m training.export --output {path}`"
        )
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise ExportFormatError(
            f"version {version} not found in {path}; available: {versions}"
        )
    return version, path / str(version)


@dataclasses.dataclass(frozen=True)
class ExportFiles:
    """The non-SavedModel files of one version, checked for consistency.

    Attributes:
      directory: the version directory.
      version: its integer name.
      metadata: parsed metadata.json.
      item_ids: `[num_items]` ids, row order of the embeddings.
      item_embeddings: `[num_items, dim]` float32 unit rows.
      items: `[num_items]` metadata dicts (items.jsonl without item_id).
    """

    directory: pathlib.Path
    version: int
    metadata: dict[str, Any]
    item_ids: list[str]
    item_embeddings: np.ndarray
    items: list[dict[str, Any]]


def read(directory: pathlib.Path, version: int) -> ExportFiles:
    """Reads and cross-checks the files of one version directory.

    Raises:
      ExportFormatError: naming the file, and the line where it applies.
    """
    for name in REQUIRED:
        if not (directory / name).exists():
            raise ExportFormatError(
                f"{directory / name} is missing; re-run training.export"
            )
    try:
        metadata = json.loads((directory / METADATA).read_text())
    except json.JSONDecodeError as e:
        raise ExportFormatError(f"{directory / METADATA}: {e}") from e
    if not isinstance(metadata, dict) or "max_k" not in metadata:
        raise ExportFormatError(
            f"{directory / METADATA} must be an object with 'max_k'"
        )

    text = (directory / ITEM_IDS).read_text(encoding="utf-8")
    item_ids = text.split("\n")
    if item_ids and item_ids[-1] == "":
        item_ids.pop()
    embeddings = np.load(directory / ITEM_EMBEDDINGS)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(item_ids):
        raise ExportFormatError(
            f"{directory / ITEM_EMBEDDINGS} has shape {embeddings.shape}; "
            f"expected [{len(item_ids)}, dim] to match {ITEM_IDS}"
        )

    items = []
    with open(directory / ITEMS, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ExportFormatError(
                    f"{directory / ITEMS} line {line_no}: {e}"
                ) from e
            expected = (
                item_ids[len(items)] if len(items) < len(item_ids) else None
            )
            if str(row.get("item_id")) != expected:
                raise ExportFormatError(
                    f"{directory / ITEMS} line {line_no}: item_id "
                    f"{row.get('item_id')!r} but {ITEM_IDS} line {line_no} "
                    f"is {expected!r}; both must list items in the same order"
                )
            row.pop("item_id")
            items.append(row)
    if len(items) != len(item_ids):
        raise ExportFormatError(
            f"{directory / ITEMS} has {len(items)} items but {ITEM_IDS} "
            f"has {len(item_ids)}"
        )
    return ExportFiles(
        directory=directory,
        version=version,
        metadata=metadata,
        item_ids=item_ids,
        item_embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
        items=items,
    )
