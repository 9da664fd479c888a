"""Vocabularies and the encoding of ids and item / user features.

Codes are 1-based: code ``0`` always means "absent" (padding, or a value
that is not in the vocabulary). Code 0 is never a learned embedding: the
towers multiply it by zero, so an unknown id or feature value contributes
nothing instead of sharing one "unknown" vector with every other stranger.

Vocabularies are built from the training split only. The item catalogue
lists the items seen in training first (codes ``1..num_trained_items``),
then items of the item table that never occur in training (cold items):
those have no id embedding and are represented by their features alone.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.schema import ItemTable, UserTable

TITLE_TOKENS = 8
MAX_CATEGORIES = 8
MAX_TITLE_VOCAB = 20000


class Vocabulary:
    """An ordered list of distinct string tokens with 1-based codes."""

    def __init__(self, tokens):
        self.tokens = pa.array(list(tokens), type=pa.string())
        if pc.count_distinct(self.tokens).as_py() != len(self.tokens):
            raise ValueError("vocabulary tokens must be distinct")

    def __len__(self) -> int:
        return len(self.tokens)

    def lookup(self, values) -> np.ndarray:
        """Codes of `values` (strings): 1-based, 0 where unknown.

        Args:
          values: A sequence or Arrow array of strings, [n].

        Returns:
          [n] int32 codes.
        """
        values = (
            pa.array(values, type=pa.string())
            if not isinstance(values, (pa.Array, pa.ChunkedArray))
            else values
        )
        index = pc.index_in(values, value_set=self.tokens)
        codes = pc.fill_null(pc.add(index, 1), 0)
        return np.asarray(codes, dtype=np.int32)

    def decode(self, codes: np.ndarray) -> list[str | None]:
        """Tokens for 1-based codes; None for code 0."""
        tokens = self.tokens.to_pylist()
        return [tokens[c - 1] if c > 0 else None for c in np.ravel(codes)]

    def to_list(self) -> list[str]:
        return self.tokens.to_pylist()


def _tokenise(texts: pa.Array) -> pa.Array:
    lowered = pc.utf8_lower(pc.fill_null(texts, ""))
    words = pc.split_pattern_regex(lowered, r"[^\w]+")
    return words


def _pad_lists(
    lists: pa.ListArray, vocab: Vocabulary, width: int
) -> np.ndarray:
    """Encodes a list<string> array as a [n, width] code matrix (0 padded)."""
    n = len(lists)
    out = np.zeros((n, width), dtype=np.int32)
    if n == 0:
        return out
    lists = (
        lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    )
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    flat = lists.flatten()
    codes = vocab.lookup(flat) if len(flat) else np.zeros(0, np.int32)
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(n), lengths)
    position = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)
    # unknown values (code 0) are dropped and the rest packed to the left
    known = codes > 0
    row, position, codes = row[known], position[known], codes[known]
    if len(codes):
        rank = np.arange(len(codes)) - np.searchsorted(row, row)
        keep = rank < width
        out[row[keep], rank[keep]] = codes[keep]
    del position
    return out


@dataclasses.dataclass
class ItemFeatures:
    """Item features aligned to item codes; row 0 is the padding item.

    Attributes:
      title_tokens: [num_items + 1, TITLE_TOKENS] token codes, 0 padded.
      categories: [num_items + 1, MAX_CATEGORIES] category codes, 0 padded.
      numeric: [num_items + 1, F] standardised numeric fields, 0 if missing.
      numeric_missing: [num_items + 1, F] 1.0 where the field is missing.
    """

    title_tokens: np.ndarray
    categories: np.ndarray
    numeric: np.ndarray
    numeric_missing: np.ndarray
    title_vocab: Vocabulary
    category_vocab: Vocabulary
    numeric_names: tuple[str, ...]
    numeric_mean: np.ndarray
    numeric_std: np.ndarray


@dataclasses.dataclass
class UserFeatures:
    """Categorical user features aligned to user codes; row 0 is padding.

    Attributes:
      values: [num_users + 1, K] codes, one column per feature, 0 unknown.
    """

    values: np.ndarray
    names: tuple[str, ...]
    vocabs: list[Vocabulary]


class Encoder:
    """Maps raw ids and side-table values to the codes the model sees.

    Args:
      train: Training interactions (canonical form).
      items: Optional item table; its items absent from `train` become cold
        items at the end of the catalogue.
      users: Optional user table.
    """

    def __init__(
        self,
        train: pa.Table,
        items: ItemTable | None = None,
        users: UserTable | None = None,
    ):
        trained = pc.unique(train.column("item_id")).sort()
        self.num_trained_items = len(trained)
        catalogue = trained
        if items is not None:
            table_ids = items.table.column("item_id")
            cold = pc.filter(
                table_ids, pc.invert(pc.is_in(table_ids, value_set=trained))
            )
            catalogue = pa.concat_arrays(
                [
                    trained,
                    cold.combine_chunks()
                    if hasattr(cold, "combine_chunks")
                    else cold,
                ]
            )
        self.items = Vocabulary(catalogue)
        self.users = Vocabulary(pc.unique(train.column("user_id")).sort())
        self.item_features = self._item_features(items)
        self.user_features = self._user_features(users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def _item_features(self, items: ItemTable | None) -> ItemFeatures:
        n = self.num_items + 1
        empty = Vocabulary([])
        feats = ItemFeatures(
            title_tokens=np.zeros((n, TITLE_TOKENS), np.int32),
            categories=np.zeros((n, MAX_CATEGORIES), np.int32),
            numeric=np.zeros((n, 0), np.float32),
            numeric_missing=np.zeros((n, 0), np.float32),
            title_vocab=empty,
            category_vocab=empty,
            numeric_names=(),
            numeric_mean=np.zeros(0, np.float32),
            numeric_std=np.ones(0, np.float32),
        )
        if items is None:
            return feats

        # rows of the item table in catalogue order (code - 1)
        codes = self.items.lookup(items.table.column("item_id"))
        present = codes > 0
        table = items.table.filter(pa.array(present))
        codes = codes[present]
        trained = codes <= self.num_trained_items

        if items.text:
            words = _tokenise(table.column(items.text).combine_chunks())
            train_words = pc.list_flatten(words.filter(pa.array(trained)))
            counts = pc.value_counts(train_words)
            values = counts.field("values")
            freq = np.asarray(counts.field("counts"))
            keep = np.asarray(pc.not_equal(values, "")).astype(bool)
            order = np.lexsort((np.arange(len(freq)), -freq))
            order = order[keep[order]][:MAX_TITLE_VOCAB]
            feats.title_vocab = Vocabulary(values.take(pa.array(order)))
            feats.title_tokens[codes] = _pad_lists(
                words, feats.title_vocab, TITLE_TOKENS
            )
        if items.categories:
            cats = table.column(items.categories).combine_chunks()
            train_cats = pc.list_flatten(cats.filter(pa.array(trained)))
            feats.category_vocab = Vocabulary(pc.unique(train_cats).sort())
            feats.categories[codes] = _pad_lists(
                cats, feats.category_vocab, MAX_CATEGORIES
            )
        if items.numeric:
            raw = np.stack(
                [
                    np.asarray(
                        pc.cast(table.column(c), pa.float64()), np.float64
                    )
                    for c in items.numeric
                ],
                axis=1,
            )
            missing = np.isnan(raw)
            train_raw = raw[trained]
            mean = (
                np.nan_to_num(np.nanmean(train_raw, axis=0))
                if len(train_raw)
                else np.zeros(raw.shape[1])
            )
            std = (
                np.nan_to_num(np.nanstd(train_raw, axis=0), nan=1.0)
                if len(train_raw)
                else np.ones(raw.shape[1])
            )
            std = np.where(std > 0, std, 1.0)
            scaled = np.where(missing, 0.0, (raw - mean) / std)
            feats.numeric = np.zeros((n, raw.shape[1]), np.float32)
            feats.numeric_missing = np.zeros((n, raw.shape[1]), np.float32)
            feats.numeric[codes] = np.clip(scaled, -5, 5)
            feats.numeric_missing[codes] = missing
            feats.numeric_names = tuple(items.numeric)
            feats.numeric_mean = mean.astype(np.float32)
            feats.numeric_std = std.astype(np.float32)
        return feats

    def _user_features(self, users: UserTable | None) -> UserFeatures:
        n = self.num_users + 1
        if users is None or not users.features:
            return UserFeatures(np.zeros((n, 0), np.int32), (), [])
        codes = self.users.lookup(users.table.column("user_id"))
        present = codes > 0
        table = users.table.filter(pa.array(present))
        codes = codes[present]
        values = np.zeros((n, len(users.features)), np.int32)
        vocabs = []
        for j, name in enumerate(users.features):
            column = pc.cast(table.column(name), pa.string())
            vocab = Vocabulary(pc.unique(pc.drop_null(column)).sort())
            values[codes, j] = vocab.lookup(column)
            vocabs.append(vocab)
        return UserFeatures(values, tuple(users.features), vocabs)

    def item_codes(self, ids) -> np.ndarray:
        return self.items.lookup(ids)

    def user_codes(self, ids) -> np.ndarray:
        return self.users.lookup(ids)

    def save(self, directory: str | pathlib.Path) -> None:
        """Writes the vocabularies and feature matrices to `directory`."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        f, u = self.item_features, self.user_features
        np.savez(
            directory / "features.npz",
            title_tokens=f.title_tokens,
            categories=f.categories,
            numeric=f.numeric,
            numeric_missing=f.numeric_missing,
            numeric_mean=f.numeric_mean,
            numeric_std=f.numeric_std,
            user_values=u.values,
        )
        vocab = {
            "num_trained_items": self.num_trained_items,
            "items": self.items.to_list(),
            "users": self.users.to_list(),
            "title_tokens": f.title_vocab.to_list(),
            "categories": f.category_vocab.to_list(),
            "numeric": list(f.numeric_names),
            "user_features": {
                name: v.to_list()
                for name, v in zip(u.names, u.vocabs, strict=False)
            },
        }
        (directory / "vocab.json").write_text(json.dumps(vocab))

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> Encoder:
        """Reads an encoder written by `save`."""
        directory = pathlib.Path(directory)
        vocab = json.loads((directory / "vocab.json").read_text())
        arrays = np.load(directory / "features.npz")
        self = cls.__new__(cls)
        self.num_trained_items = vocab["num_trained_items"]
        self.items = Vocabulary(vocab["items"])
        self.users = Vocabulary(vocab["users"])
        self.item_features = ItemFeatures(
            title_tokens=arrays["title_tokens"],
            categories=arrays["categories"],
            numeric=arrays["numeric"],
            numeric_missing=arrays["numeric_missing"],
            title_vocab=Vocabulary(vocab["title_tokens"]),
            category_vocab=Vocabulary(vocab["categories"]),
            numeric_names=tuple(vocab["numeric"]),
            numeric_mean=arrays["numeric_mean"],
            numeric_std=arrays["numeric_std"],
        )
        names = tuple(vocab["user_features"])
        self.user_features = UserFeatures(
            arrays["user_values"],
            names,
            [Vocabulary(vocab["user_features"][n]) for n in names],
        )
        return self
