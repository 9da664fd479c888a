"""The Python API: top-k items for a user, a history or an item.

    from serving import Recommender

    rec = Recommender.load("EXPORT_DIR")          # newest version
    recs = rec.recommend("42", k=10, filters={"year": {"min": 1990}})
    for r in recs.items:
        print(r.item_id, r.similarity, r.score, r.metadata["title"])

Similarity (cosine of query and candidate embeddings) ranks the items;
`score` is the calibrated chance of an interaction (serving.calibration).
Candidates come from the export's ScaNN signatures. Filters and explicit
exclusions are applied to an over-fetched candidate list; when too few
survive, an exact search over item_embeddings.npy restricted to the
matching items takes over, so k results come back whenever k items match.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

import data  # noqa: F401  (Keras 2 before TensorFlow)
from serving import calibration as calibration_lib
from serving import export_dir, rerank
from serving.catalogue import Catalogue
from serving.errors import (
    InvalidArgumentError,
    InvalidKError,
    UnknownItemError,
    UnknownUserError,
)

logger = logging.getLogger(__name__)

# Candidates fetched per requested result when filters or exclusions may
# discard some; the exact search covers the cases where this is not enough.
FILTER_OVERFETCH = 10
# MMR chooses k results among this many times k candidates.
DIVERSITY_POOL = 5

SIGNATURES = (
    "serving_default",
    "recommend_excluding",
    "recommend_for_history",
    "similar_items",
    "user_embeddings",
    "history_embeddings",
    "seen_items",
)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    Attributes:
      item_id: the catalogue id.
      similarity: cosine of query and candidate embedding (ranking signal).
      score: displayed score in [0, 1] (see `Recommendations.score_kind`).
      metadata: the item's row of items.jsonl without `item_id` (shared;
        do not modify).
    """

    item_id: str
    similarity: float
    score: float
    metadata: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "similarity": self.similarity,
            "score": self.score,
            "metadata": dict(self.metadata),
        }


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """Ranked results of one query.

    Attributes:
      items: best first.
      score_kind: "isotonic" (calibrated probability) or "linear"
        ((1 + cosine) / 2, when the export had no calibration data).
      model_version: the export version that answered.
      exact: True when the exact search over all matching items produced
        the candidates instead of the ScaNN index.
    """

    items: list[Recommendation]
    score_kind: str
    model_version: int
    exact: bool = False

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "score_kind": self.score_kind,
            "exact": self.exact,
            "items": [r.to_dict() for r in self.items],
        }


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Recommendations of one user from `Recommender.recommend_batch`.

    Attributes:
      user_id: as given.
      known: False for a user the model has no embedding for; `items` is
        then empty.
      items: best first.
    """

    user_id: str
    known: bool
    items: list[Recommendation]


@dataclasses.dataclass(frozen=True)
class _Candidates:
    rows: np.ndarray  # [n] int64 catalogue rows, best first
    similarities: np.ndarray  # [n] float32
    truncated: bool  # the search filled every slot, so more may exist


_NO_ROWS = np.zeros(0, dtype=np.int64)


def _decode(values: Any) -> list[str]:
    return [v.decode("utf-8") for v in np.asarray(values).ravel()]


def _encodable(item_id: str) -> bool:
    # A JSON string may hold lone surrogates, which TensorFlow cannot take.
    try:
        item_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Recommender:
    """Answers queries from one loaded export version.

    Safe to share between threads. Build with `Recommender.load`.
    """

    def __init__(self, files: export_dir.ExportFiles, model: Any):
        self.files = files
        self.metadata = files.metadata
        self.version = files.version
        self.directory = files.directory
        self.max_k = int(files.metadata["max_k"])
        # an approximate index can return fewer candidates than asked
        self.index_exact = bool(files.metadata.get("index", {}).get("exact"))
        self.catalogue = Catalogue(files.item_ids, files.items)
        self.item_embeddings = files.item_embeddings
        self.calibration = calibration_lib.Calibration.from_dict(
            files.metadata.get("calibration")
        )
        self._model = model
        missing = [s for s in SIGNATURES if s not in model.signatures]
        if missing:
            raise export_dir.ExportFormatError(
                f"{files.directory} lacks signatures {missing}; re-export "
                "with training.export (docs/export-format.md)"
            )
        self._signatures = {s: model.signatures[s] for s in SIGNATURES}

    @classmethod
    def load(
        cls, path: str | pathlib.Path, version: int | None = None
    ) -> Recommender:
        """Loads an export version and warms its index up.

        Args:
          path: EXPORT_DIR (integer version subdirectories) or a version
            directory.
          version: the version to load; None loads the newest.

        Raises:
          ExportFormatError: if the directory or version is missing or its
            files disagree.
        """
        import scann  # noqa: F401  (registers the ScaNN ops)
        import tensorflow as tf

        start = time.perf_counter()
        version, directory = export_dir.resolve(path, version)
        files = export_dir.read(directory, version)
        model = tf.saved_model.load(str(directory))
        rec = cls(files, model)
        # The first search builds the ScaNN searcher; pay that here, not
        # in the first request.
        if len(rec.catalogue):
            rec.similar_items(rec.catalogue.item_ids[0], k=1)
        logger.info(
            "loaded %s (version %d, %d items, scores %s) in %.1f s",
            directory,
            version,
            len(rec.catalogue),
            rec.score_kind,
            time.perf_counter() - start,
        )
        return rec

    @property
    def score_kind(self) -> str:
        return self.calibration.kind

    @property
    def num_items(self) -> int:
        return len(self.catalogue)

    # Public queries.

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Iterable[str] = (),
        filters: Mapping[str, Any] | None = None,
        diversity: float = 0.0,
    ) -> Recommendations:
        """Top-k items for a known user.

        Args:
          user_id: a user id from the training logs.
          k: results wanted, 1..max_k.
          exclude_seen: leave out the user's training items.
          exclude: further item ids to leave out (unknown ids ignored).
          filters: metadata conditions (see serving.catalogue).
          diversity: MMR lambda in [0, 1]; 0 ranks by similarity alone.

        Returns:
          Up to k recommendations; fewer only when fewer items match.

        Raises:
          UnknownUserError: if the model does not know `user_id`.
          InvalidKError, InvalidFilterError, InvalidArgumentError: for
            arguments out of range.
        """
        self._check(k, diversity)
        user_id = str(user_id)
        exclude = [str(i) for i in exclude if _encodable(str(i))]
        mask = self.catalogue.mask(filters)
        banned = self.catalogue.rows(exclude)
        if not _encodable(user_id):
            raise self._unknown_user(user_id)

        def user_vector() -> np.ndarray:
            vectors, known = self._user_embeddings([user_id])
            if not known[0]:
                raise self._unknown_user(user_id)
            return vectors[0]

        if not exclude_seen:
            # The signatures always drop seen items, so search exactly.
            return self._rank(None, user_vector, k, mask, banned, diversity)

        def index_search(n: int) -> _Candidates:
            ids = [user_id]
            if exclude:
                out = self._signatures["recommend_excluding"](
                    user_ids=self._strings(ids),
                    exclude=self._strings([exclude]),
                    k=self._k(n),
                )
            else:
                out = self._signatures["serving_default"](
                    user_ids=self._strings(ids), k=self._k(n)
                )
            if not bool(out["known"].numpy()[0]):
                raise self._unknown_user(user_id)
            return self._first(out, n)

        def exact_query() -> tuple[np.ndarray, np.ndarray]:
            seen = self.catalogue.rows(self.seen_items(user_id))
            return user_vector(), np.union1d(seen, banned)

        # recommend_excluding drops the excluded ids itself.
        return self._rank(
            index_search, exact_query, k, mask, _NO_ROWS, diversity
        )

    def recommend_for_history(
        self,
        item_ids: Sequence[str],
        k: int = 10,
        exclude: Iterable[str] = (),
        filters: Mapping[str, Any] | None = None,
        diversity: float = 0.0,
    ) -> Recommendations:
        """Top-k items for an anonymous session's item history.

        Items in the history are left out of the results; ids unknown to
        the catalogue are ignored.

        Raises:
          UnknownItemError: if no history item is known.
        """
        self._check(k, diversity)
        history = [str(i) for i in item_ids if _encodable(str(i))]
        history_rows = self.catalogue.rows(history)
        if len(history_rows) == 0:
            shown = list(item_ids)[:5]
            raise UnknownItemError(
                f"history: none of the {len(list(item_ids))} item ids is in "
                f"the catalogue (first: {shown}); pass ids from "
                "item_ids.txt"
            )
        history = [self.catalogue.item_ids[r] for r in history_rows]
        mask = self.catalogue.mask(filters)
        banned = self.catalogue.rows(exclude)

        def index_search(n: int) -> _Candidates:
            out = self._signatures["recommend_for_history"](
                history=self._strings([history]), k=self._k(n)
            )
            return self._first(out, n)

        def exact_query() -> tuple[np.ndarray, np.ndarray]:
            out = self._signatures["history_embeddings"](
                history=self._strings([history])
            )
            return out["embeddings"].numpy()[0], history_rows

        return self._rank(index_search, exact_query, k, mask, banned, diversity)

    def similar_items(
        self,
        item_id: str,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
    ) -> Recommendations:
        """Items whose candidate embeddings are closest to `item_id`'s.

        Raises:
          UnknownItemError: if `item_id` is not in the catalogue.
        """
        self._check(k, 0.0)
        item_id = str(item_id)
        row = self.catalogue.row_of.get(item_id)
        if row is None:
            raise UnknownItemError(
                f"item_id {item_id!r} is not in the catalogue of version "
                f"{self.version} ({self.num_items} items); pass an id from "
                "item_ids.txt"
            )
        mask = self.catalogue.mask(filters)
        itself = np.asarray([row], dtype=np.int64)

        def index_search(n: int) -> _Candidates:
            out = self._signatures["similar_items"](
                item_ids=self._strings([item_id]), k=self._k(n)
            )
            return self._first(out, n)

        def exact_query() -> tuple[np.ndarray, np.ndarray]:
            return self.item_embeddings[row], itself

        return self._rank(index_search, exact_query, k, mask, _NO_ROWS, 0.0)

    def recommend_batch(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 1024,
    ) -> Iterator[BatchResult]:
        """Top-k items for many users, `batch_size` per signature call.

        Unknown users come back with `known=False` instead of raising.

        Yields:
          One BatchResult per user id, in input order.
        """
        self._check(k, 0.0)
        if batch_size < 1:
            raise InvalidArgumentError(
                f"batch_size must be at least 1; got {batch_size}"
            )
        for start in range(0, len(user_ids), batch_size):
            batch = [str(u) for u in user_ids[start : start + batch_size]]
            safe = [u if _encodable(u) else "" for u in batch]
            if exclude_seen:
                out = self._signatures["serving_default"](
                    user_ids=self._strings(safe), k=self._k(k)
                )
                known = out["known"].numpy() & np.asarray(
                    [bool(u) for u in safe]
                )
                ids = out["item_ids"].numpy()
                sims = out["scores"].numpy()
                rows_of = [
                    self._candidates(ids[i], sims[i], k)
                    for i in range(len(batch))
                ]
            else:
                vectors, known = self._user_embeddings(safe)
                rows_of = self._exact_batch(vectors, k)
            for user_id, ok, cand in zip(batch, known, rows_of, strict=True):
                if not ok:
                    items = []
                elif (
                    exclude_seen and len(cand.rows) < k and not self.index_exact
                ):
                    # an approximate index can come back short (it reorders
                    # a bounded number of candidates): the single-user path
                    # then searches exactly
                    items = self.recommend(user_id, k).items
                else:
                    items = self._results(cand.rows, cand.similarities)
                yield BatchResult(user_id=user_id, known=bool(ok), items=items)

    # Lookups used by the queries (public: handy for tests and debugging).

    def user_embedding(self, user_id: str) -> np.ndarray:
        """`[dim]` query embedding of a known user."""
        vectors, known = self._user_embeddings([str(user_id)])
        if not known[0]:
            raise self._unknown_user(str(user_id))
        return vectors[0]

    def seen_items(self, user_id: str) -> list[str]:
        """The user's training items (what exclude_seen leaves out)."""
        out = self._signatures["seen_items"](
            user_ids=self._strings([str(user_id)])
        )
        return [i for i in _decode(out["item_ids"].numpy()[0]) if i]

    # Internals.

    def _check(self, k: Any, diversity: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise InvalidKError(
                f"k must be an integer in 1..{self.max_k}; got {k!r}"
            )
        if not 1 <= k <= self.max_k:
            raise InvalidKError(
                f"k must be in 1..{self.max_k} (the export's max_k); got {k}"
            )
        if isinstance(diversity, bool) or not isinstance(
            diversity, int | float | np.integer | np.floating
        ):
            raise InvalidArgumentError(
                f"diversity must be a number in [0, 1]; got {diversity!r}"
            )
        if not 0.0 <= diversity <= 1.0:
            raise InvalidArgumentError(
                f"diversity must be in [0, 1] (0 = by similarity only); "
                f"got {diversity}"
            )

    def _unknown_user(self, user_id: str) -> UnknownUserError:
        return UnknownUserError(
            f"user_id {user_id!r} is unknown to model version "
            f"{self.version}; use recommend_for_history with the user's "
            "items, or retrain with the user's interactions"
        )

    @staticmethod
    def _strings(values: Any):
        import tensorflow as tf

        return tf.constant(values, dtype=tf.string)

    @staticmethod
    def _k(n: int):
        import tensorflow as tf

        return tf.constant(n, dtype=tf.int32)

    def _user_embeddings(
        self, user_ids: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        out = self._signatures["user_embeddings"](
            user_ids=self._strings(user_ids)
        )
        known = out["known"].numpy() & np.asarray([bool(u) for u in user_ids])
        return out["embeddings"].numpy(), known

    def _first(self, out: Mapping[str, Any], n: int) -> _Candidates:
        """Candidates of the first query of a signature's output."""
        return self._candidates(
            out["item_ids"].numpy()[0], out["scores"].numpy()[0], n
        )

    def _candidates(self, ids: Any, sims: Any, n: int) -> _Candidates:
        """Index output -> catalogue rows, padding dropped."""
        ids = _decode(ids.numpy() if hasattr(ids, "numpy") else ids)
        sims = np.asarray(sims.numpy() if hasattr(sims, "numpy") else sims)
        rows, kept = [], []
        for i, item_id in enumerate(ids):
            row = self.catalogue.row_of.get(item_id) if item_id else None
            if row is not None and np.isfinite(sims[i]):
                rows.append(row)
                kept.append(sims[i])
        return _Candidates(
            rows=np.asarray(rows, dtype=np.int64),
            similarities=np.asarray(kept, dtype=np.float32),
            truncated=len(ids) >= n and len(rows) == len(ids),
        )

    def _exact(
        self, query: np.ndarray, n: int, allowed: np.ndarray
    ) -> _Candidates:
        """Exact top-n inner products over the allowed rows."""
        rows = np.flatnonzero(allowed)
        n = min(n, len(rows))
        if n == 0:
            return _Candidates(
                np.zeros(0, np.int64), np.zeros(0, np.float32), False
            )
        sims = self.item_embeddings[rows] @ query.astype(np.float32)
        top = np.argpartition(-sims, n - 1)[:n]
        top = top[np.argsort(-sims[top], kind="stable")]
        return _Candidates(rows[top], sims[top], False)

    def _exact_batch(self, vectors: np.ndarray, k: int) -> list[_Candidates]:
        """Exact top-k for `[B, dim]` queries, in chunks to bound memory."""
        k = min(k, self.num_items)
        results = []
        chunk = max(1, 2**24 // max(self.num_items, 1))
        for start in range(0, len(vectors), chunk):
            sims = vectors[start : start + chunk] @ self.item_embeddings.T
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            for i in range(len(top)):
                order = top[i][np.argsort(-sims[i, top[i]], kind="stable")]
                results.append(_Candidates(order, sims[i, order], False))
        return results

    def _rank(
        self,
        index_search: Callable[[int], _Candidates] | None,
        exact_query: Callable[[], Any],
        k: int,
        mask: np.ndarray | None,
        banned: np.ndarray,
        diversity: float,
    ) -> Recommendations:
        """Candidates from the index (or exact search), filtered, re-ranked.

        Args:
          index_search: n -> the index's top-n, or None to search exactly.
          exact_query: () -> (query vector, rows the index would have left
            out, e.g. seen items), or a bare query vector.
          k: results wanted.
          mask: `[num_items]` rows the filters allow, or None.
          banned: rows to leave out that the index search does not leave
            out itself (exact_query returns those).
          diversity: MMR lambda.
        """
        pool = k if diversity == 0 else min(self.max_k, k * DIVERSITY_POOL)
        exact = index_search is None
        kept = None
        if not exact:
            post_filtered = mask is not None or len(banned) > 0
            fetch = pool
            if post_filtered:
                fetch = min(
                    self.max_k, max(pool * FILTER_OVERFETCH, pool + len(banned))
                )
            found = index_search(fetch)
            keep = ~np.isin(found.rows, banned)
            if mask is not None:
                keep &= mask[found.rows]
            kept = _Candidates(
                found.rows[keep], found.similarities[keep], found.truncated
            )
            # Too few survived and the index had (or, being approximate,
            # may have had) more to give: search exactly among the
            # matching items instead.
            exact = len(kept.rows) < pool and (
                found.truncated or not self.index_exact
            )

        if exact:
            query = exact_query()
            if isinstance(query, tuple):
                vector, also_banned = query
            else:
                vector, also_banned = query, np.zeros(0, np.int64)
            allowed = (
                np.ones(self.num_items, bool) if mask is None else mask.copy()
            )
            allowed[banned] = False
            allowed[also_banned] = False
            kept = self._exact(vector, pool, allowed)

        rows, sims = kept.rows[:pool], kept.similarities[:pool]
        if diversity > 0:
            order = rerank.mmr(self.item_embeddings[rows], sims, k, diversity)
            rows, sims = rows[order], sims[order]
        return Recommendations(
            items=self._results(rows[:k], sims[:k]),
            score_kind=self.score_kind,
            model_version=self.version,
            exact=bool(exact),
        )

    def _results(
        self, rows: np.ndarray, sims: np.ndarray
    ) -> list[Recommendation]:
        scores = self.calibration.apply(sims)
        ids, meta = self.catalogue.item_ids, self.catalogue.metadata
        return [
            Recommendation(
                item_id=ids[r],
                similarity=float(s),
                score=float(p),
                metadata=meta[r],
            )
            for r, s, p in zip(rows.tolist(), sims, scores, strict=True)
        ]
