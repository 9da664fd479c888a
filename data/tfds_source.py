"""Read a TensorFlow Datasets entry into columnar tables.

`data.load.load` hands sources written ``tfds:<name>`` here, for example
``tfds:movielens/100k-ratings`` for a log and ``tfds:movielens/100k-movies``
for its items. The entry is downloaded and prepared on first use into
``$TFDS_DATA_DIR`` (TFDS's own default when unset).

Text fields come back as strings; class labels (such as MovieLens genres)
come back as their names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from data.schema import ColumnMap, DataError

logger = logging.getLogger(__name__)

PREFIX = "tfds:"
BATCH_SIZE = 65536

# Field names of the MovieLens entries, used when the user kept the
# project's default column names.
MOVIELENS_LOG = {
    "user": "user_id",
    "item": "movie_id",
    "time": "timestamp",
    "weight": "user_rating",
}
MOVIELENS_ITEMS = {
    "item_id": "movie_id",
    "item_text": "movie_title",
    "item_categories": "movie_genres",
}


def entry_name(source: str) -> str:
    """``tfds:movielens/100k-ratings`` -> ``movielens/100k-ratings``."""
    name = source[len(PREFIX) :] if source.startswith(PREFIX) else source
    if not name:
        raise DataError(
            "no dataset named after 'tfds:'; write e.g. "
            "tfds:movielens/100k-ratings",
            source=source,
        )
    return name


def default_columns(source: str, columns: ColumnMap, role: str) -> ColumnMap:
    """Fills in MovieLens field names where the defaults were kept.

    Args:
      source: ``tfds:<name>``.
      columns: The user's column map.
      role: ``"log"`` for interactions or ``"items"`` for the item table.

    Returns:
      The column map, with MovieLens names in place of untouched defaults
      when the entry is a MovieLens one; unchanged otherwise.
    """
    if not entry_name(source).startswith("movielens"):
        return columns
    default = ColumnMap()
    changes: dict[str, Any] = {}
    if role == "log":
        for field, name in MOVIELENS_LOG.items():
            if getattr(columns, field) == getattr(default, field):
                changes[field] = name
    else:
        for field, name in MOVIELENS_ITEMS.items():
            if getattr(columns, field) is None:
                changes[field] = name
    return dataclasses.replace(columns, **changes)


def _load_dataset(source: str) -> tuple[Any, Any]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(
            "reading a tfds: source needs tensorflow-datasets; "
            "pip install tensorflow-datasets",
            source=source,
        ) from error
    name = entry_name(source)
    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    try:
        dataset, info = tfds.load(
            name,
            split="train",
            data_dir=data_dir,
            with_info=True,
            download=True,
        )
    except Exception as error:  # TFDS raises many unrelated types.
        raise DataError(
            f"cannot load the TensorFlow Datasets entry '{name}': {error}. "
            "Check the name at https://www.tensorflow.org/datasets/catalog "
            "and that TFDS_DATA_DIR holds it or the network is reachable",
            source=source,
        ) from error
    return dataset, info


def field_names(source: str) -> list[str]:
    """Names of the top-level fields of a TFDS entry."""
    _, info = _load_dataset(source)
    return list(info.features.keys())


def _label_names(feature: Any) -> list[str] | None:
    """Class names of a ClassLabel or a Sequence of ClassLabel, if any."""
    inner = getattr(feature, "feature", feature)
    names = getattr(inner, "names", None)
    return list(names) if names else None


def _to_arrow(values: Any, names: list[str] | None) -> pa.Array:
    """One batch of one field -> an Arrow array (lists for ragged fields)."""
    import tensorflow as tf

    if isinstance(values, tf.RaggedTensor):
        flat = _to_arrow(values.flat_values.numpy(), names)
        splits = values.row_splits.numpy().astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(splits), flat)
    values = np.asarray(values)
    if values.ndim > 1:
        width = values.shape[1]
        flat = _to_arrow(values.reshape(-1), names)
        offsets = np.arange(0, values.size + 1, width, dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), flat)
    if names is not None:
        return pa.array(np.asarray(names, dtype=object)[values], pa.string())
    if values.dtype == object:
        return pa.array(values, pa.binary()).cast(pa.string())
    return pa.array(values)


def read_tfds(source: str, fields: Sequence[str] | None) -> pa.Table:
    """Reads the ``train`` split of a TFDS entry as an Arrow table.

    Args:
      source: ``tfds:<name>``.
      fields: Fields to read; None reads every top-level field.

    Returns:
      One column per field in dataset order: text as strings, class labels
      as their names, sequences as lists.

    Raises:
      DataError: The entry cannot be loaded, a field is missing or a text
        field is not UTF-8.
    """
    import tensorflow_datasets as tfds

    dataset, info = _load_dataset(source)
    available = list(info.features.keys())
    chosen = available if fields is None else list(fields)
    missing = [f for f in chosen if f not in available]
    if missing:
        # Let the caller name the flag; it checks the columns again.
        chosen = [f for f in chosen if f in available]
    labels = {f: _label_names(info.features[f]) for f in chosen}

    dataset = dataset.map(lambda example: {f: example[f] for f in chosen})
    columns: dict[str, list[pa.Array]] = {f: [] for f in chosen}
    batches = 0
    for batch in tfds.as_numpy(dataset.ragged_batch(BATCH_SIZE)):
        for field in chosen:
            try:
                columns[field].append(_to_arrow(batch[field], labels[field]))
            except pa.ArrowInvalid as error:
                raise DataError(
                    f"field holds text that is not UTF-8: {error}",
                    source=source,
                    column=field,
                ) from error
        batches += 1
    logger.info("Read %s in %d batches.", source, batches)
    arrays = {
        f: pa.chunked_array(parts) if parts else pa.chunked_array([], pa.null())
        for f, parts in columns.items()
    }
    return pa.table(arrays)
