"""Per-user histories and the `tf.data` input pipeline.

A user's training interactions, ordered by time (file order breaks ties),
form their history. Histories are stored once as a flat array of item codes
with per-user offsets; each training example is just (user, position,
target), and the history window is gathered per batch with tensor ops, so
no Python runs per example and memory does not grow with the history
length.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from data.vocab import Encoder

HISTORY_MODES = ("before", "all")


@dataclasses.dataclass
class Sequences:
    """Time-ordered item codes per user.

    Attributes:
      items: [n] item codes (1-based), grouped by user, time-ordered.
      offsets: [num_users + 2] start of user code u's items is
        ``offsets[u]``; user code 0 (unknown) owns an empty range.
    """

    items: np.ndarray
    offsets: np.ndarray

    def of(self, user_code: int) -> np.ndarray:
        return self.items[self.offsets[user_code] : self.offsets[user_code + 1]]

    def padded(self, user_codes: np.ndarray, length: int) -> np.ndarray:
        """The last `length` items of each user, left-aligned, 0 padded.

        Args:
          user_codes: [n] user codes.
          length: Window length L.

        Returns:
          [n, L] item codes, most recent last among the filled slots.
        """
        start = self.offsets[user_codes]
        end = self.offsets[user_codes + 1]
        begin = np.maximum(start, end - length)
        idx = begin[:, None] + np.arange(length)[None, :]
        valid = idx < end[:, None]
        safe = np.where(valid, idx, 0)
        if len(self.items) == 0:
            return np.zeros((len(user_codes), length), np.int32)
        return np.where(valid, self.items[safe], 0).astype(np.int32)


@dataclasses.dataclass
class Examples:
    """Training examples as parallel arrays (codes, not strings)."""

    user: np.ndarray
    position: np.ndarray
    item: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.item)


def encode_interactions(
    table: pa.Table, encoder: Encoder
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User codes, item codes and a time order key of a canonical table."""
    users = encoder.user_codes(table.column("user_id"))
    items = encoder.item_codes(table.column("item_id"))
    ts = np.asarray(table.column("timestamp"), np.int64)
    rows = np.asarray(table.column("row"), np.int64)
    order = np.lexsort((rows, ts))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return users, items, rank


def build_sequences(
    table: pa.Table, encoder: Encoder
) -> tuple[Sequences, Examples]:
    """Histories of the users in `table` and one example per interaction.

    Rows whose user or item is unknown to `encoder` are skipped.

    Returns:
      The per-user sequences and the examples, where ``position`` is the
      index of the example's item inside its user's sequence.
    """
    users, items, rank = encode_interactions(table, encoder)
    weights = np.asarray(table.column("weight"), np.float32)
    known = (users > 0) & (items > 0)
    users, items, rank = users[known], items[known], rank[known]
    weights = weights[known]

    order = np.lexsort((rank, users))
    users, items, weights = users[order], items[order], weights[order]
    counts = np.bincount(users, minlength=encoder.num_users + 2)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    position = np.arange(len(users)) - offsets[users]
    sequences = Sequences(items.astype(np.int32), offsets)
    examples = Examples(
        user=users.astype(np.int32),
        position=position.astype(np.int32),
        item=items.astype(np.int32),
        weight=weights,
    )
    return sequences, examples


def history_window(
    sequences: Sequences,
    user,
    position,
    length: int,
    mode: str = "before",
):
    """Gathers the history of a batch of examples with TensorFlow ops.

    Args:
      sequences: The users' sequences.
      user: [B] user codes (tensor).
      position: [B] index of the target inside the user's sequence.
      length: History length L.
      mode: ``before``: the L items before the target in time.
        ``all``: the user's L most recent items other than the target
        (the target hidden from its own history).

    Returns:
      [B, L] item codes, 0 padded.
    """
    import tensorflow as tf

    if mode not in HISTORY_MODES:
        raise ValueError(f"history mode must be one of {HISTORY_MODES}")
    items = tf.constant(np.concatenate([[0], sequences.items]), tf.int32)
    offsets = tf.constant(sequences.offsets, tf.int64)
    user = tf.cast(user, tf.int64)
    position = tf.cast(position, tf.int64)
    start = tf.gather(offsets, user)
    target = start + position
    if mode == "before":
        end = target
        width = length
    else:
        end = tf.gather(offsets, user + 1)
        width = length + 1
    begin = tf.maximum(start, end - width)
    idx = begin[:, None] + tf.range(width, dtype=tf.int64)[None, :]
    valid = (idx < end[:, None]) & (idx != target[:, None])
    # shifted by one: slot 0 of `items` is the padding code
    codes = tf.gather(items, tf.where(valid, idx + 1, 0))
    if mode == "all":
        # keep the most recent L of the (up to L + 1) remaining items
        codes = _pack(codes, left=False)[:, -length:]
        codes = _pack(codes, left=True)
    return codes


def _pack(codes, left: bool):
    """Moves non-zero codes to one side, keeping their order."""
    import tensorflow as tf

    filled = tf.cast(codes > 0, tf.int32)
    # a stable sort on "is padding" (or "is filled") keeps the order
    key = 1 - filled if left else filled
    order = tf.argsort(key, axis=1, stable=True)
    return tf.gather(codes, order, batch_dims=1)


def make_dataset(
    sequences: Sequences,
    examples: Examples,
    *,
    history_length: int,
    batch_size: int,
    history_mode: str = "before",
    shuffle: bool = True,
    seed: int = 0,
):
    """A `tf.data.Dataset` of feature dicts for the retrieval model.

    Each element holds ``user`` [B], ``history`` [B, L], ``item`` [B] and
    ``weight`` [B]. The example arrays are cached in memory, shuffled with
    a seed per epoch and batched before the history is gathered, so the
    per-example path has no Python.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        {
            "user": examples.user,
            "position": examples.position,
            "item": examples.item,
            "weight": examples.weight,
        }
    ).cache()
    if shuffle:
        ds = ds.shuffle(
            min(len(examples), 1_000_000),
            seed=seed,
            reshuffle_each_iteration=True,
        )
    ds = ds.batch(batch_size, drop_remainder=False)

    def add_history(batch):
        features = dict(batch)
        position = features.pop("position")
        features["history"] = history_window(
            sequences, batch["user"], position, history_length, history_mode
        )
        return features

    ds = ds.map(add_history, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
