"""A ScaNN retrieval index over candidate embeddings, tuned for recall.

The settings follow the catalogue size: brute-force scoring below about
20k items, otherwise a partitioning tree with about sqrt(N) leaves,
anisotropic quantisation with two dimensions per block, and exact
reordering of the best approximate candidates. The number of leaves
searched and of candidates reordered grow until recall@10 against exact
search on held-out queries reaches a target.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
from scann.scann_ops.py import scann_ops

log = logging.getLogger(__name__)

BRUTE_FORCE_BELOW = 20_000
# candidates reordered exactly, tried in this order while tuning
REORDER_GRID = (50, 100, 200, 400)
# settings that reach the recall target, timed against each other
TUNING_CANDIDATES = 3


@dataclasses.dataclass
class IndexSettings:
    """How the ScaNN searcher is built.

    Attributes:
      kind: ``brute_force`` (exact) or ``tree_ah``.
      num_leaves: Partitions of the tree.
      num_leaves_to_search: Partitions scored per query.
      dimensions_per_block: Anisotropic quantisation block width.
      num_reordering_candidates: Candidates rescored exactly.
      anisotropic_threshold: Quantisation threshold of the AH scorer.
      training_iterations: k-means iterations of the tree.
    """

    kind: str = "brute_force"
    num_leaves: int = 0
    num_leaves_to_search: int = 0
    dimensions_per_block: int = 2
    num_reordering_candidates: int = 0
    anisotropic_threshold: float = 0.2
    training_iterations: int = 12

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_settings(
    num_items: int,
    exact: bool = False,
    brute_force_below: int = BRUTE_FORCE_BELOW,
) -> IndexSettings:
    """Starting settings for a catalogue of `num_items` candidates."""
    if exact or num_items < brute_force_below:
        return IndexSettings(kind="brute_force")
    leaves = max(2, int(round(math.sqrt(num_items))))
    return IndexSettings(
        kind="tree_ah",
        num_leaves=leaves,
        num_leaves_to_search=max(1, leaves // 20),
        num_reordering_candidates=100,
    )


def scann_builder(embeddings, settings: IndexSettings, k: int):
    """A ScaNN TensorFlow-op builder for `settings`."""
    builder = scann_ops.builder(embeddings, k, "dot_product")
    if settings.kind == "brute_force":
        return builder.score_brute_force()
    builder = builder.tree(
        num_leaves=settings.num_leaves,
        num_leaves_to_search=settings.num_leaves_to_search,
        training_iterations=settings.training_iterations,
    )
    builder = builder.score_ah(
        settings.dimensions_per_block,
        anisotropic_quantization_threshold=settings.anisotropic_threshold,
    )
    return builder.reorder(settings.num_reordering_candidates)


class ScaNNIndex(tfrs.layers.factorized_top_k.ScaNN):
    """TFRS's ScaNN layer, built from `IndexSettings`.

    The parent layer always builds a tree with isotropic quantisation;
    this one can also score by brute force (small catalogues, ``--exact``)
    and uses anisotropic quantisation, which ranks inner products better.
    """

    def __init__(self, settings: IndexSettings, k: int = 10, **kwargs):
        super().__init__(
            k=k,
            num_leaves=max(settings.num_leaves, 1),
            num_leaves_to_search=max(settings.num_leaves_to_search, 1),
            dimensions_per_block=settings.dimensions_per_block,
            num_reordering_candidates=(
                settings.num_reordering_candidates or None
            ),
            # single queries dominate serving, and the parallel batch op
            # costs them about a third more per call (measured at 100k)
            parallelize_batch_searches=False,
            **kwargs,
        )
        self.settings = settings

        def build(candidates):
            return scann_builder(candidates, settings, k).build(
                shared_name=f"{self.name}/{uuid.uuid4()}"
            )

        self._build_searcher = build


def exact_top_k(queries: np.ndarray, embeddings: np.ndarray, k: int):
    """[n, k] indices of the exact top-k inner products (numpy)."""
    scores = queries @ embeddings.T
    k = min(k, embeddings.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
    return np.take_along_axis(part, order, 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-k found by the approximate search.

    Args:
      found: [num_queries, n] ids the search returned.
      truth: [num_queries, k] exact top-k ids (distinct per row).
    """
    found, truth = np.asarray(found), np.asarray(truth)
    if not truth.size:
        return 1.0
    # each exact neighbour counts once, wherever it appears in `found`
    hits = (truth[:, :, None] == found[:, None, :]).any(axis=2).sum()
    return float(hits / truth.size)


@dataclasses.dataclass
class TunedIndex:
    """An indexed layer with what tuning measured.

    Attributes:
      layer: The indexed ScaNN layer.
      settings: Its settings.
      recall_at_10: Recall@10 against exact search on the tuning queries.
      single_query_ms: Median latency of one query through the layer.
      batch_queries_per_second: Throughput of one batched call.
      held_out_recall_at_10: The same recall on the held-out queries, when
        some were given (else None).
    """

    layer: ScaNNIndex
    settings: IndexSettings
    recall_at_10: float
    single_query_ms: float
    batch_queries_per_second: float
    held_out_recall_at_10: float | None = None


def _measure(layer, queries: np.ndarray, truth: np.ndarray):
    k = truth.shape[1]
    _, found = layer(tf.constant(queries), k=k)
    recall = recall_at_k(found.numpy(), truth)
    times = []
    for q in queries[: min(len(queries), 200)]:
        start = time.perf_counter()
        layer(tf.constant(q[None, :]), k=k)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    layer(tf.constant(queries), k=k)
    batch = time.perf_counter() - start
    return recall, 1000 * float(np.median(times)), len(queries) / batch


def build_index(
    embeddings: np.ndarray,
    queries: np.ndarray,
    *,
    target_recall: float = 0.95,
    exact: bool = False,
    k: int = 10,
    identifiers: np.ndarray | None = None,
    min_results: int = 0,
    brute_force_below: int = BRUTE_FORCE_BELOW,
    held_out: np.ndarray | None = None,
) -> TunedIndex:
    """Builds and tunes a ScaNN layer over candidate embeddings.

    Args:
      embeddings: [num_items, dim] candidate embeddings.
      queries: [num_queries, dim] held-out query embeddings for tuning.
      target_recall: Recall@10 against exact search to reach.
      exact: Brute force, whatever the size.
      k: The layer's default number of results.
      identifiers: [num_items] ids returned instead of row numbers.
      min_results: A tree index returns at most its reordering count of
        candidates; tuning tries no fewer than this many.
      brute_force_below: Catalogues smaller than this are searched by
        brute force.
      held_out: [num_held_out, dim] further queries the tuning does not
        see. The final recall is measured on them too, and the search is
        widened until it reaches the target there as well.

    Returns:
      The indexed layer, its settings and the measured recall and speed.
    """
    embeddings = np.asarray(embeddings, np.float32)
    queries = np.asarray(queries, np.float32)
    truth = exact_top_k(queries, embeddings, 10)
    settings = default_settings(len(embeddings), exact, brute_force_below)

    if settings.kind == "tree_ah":
        settings = _tune(
            embeddings, queries, truth, settings, target_recall, min_results
        )

    if identifiers is None:
        identifiers = np.arange(len(embeddings), dtype=np.int64)
    identifiers = np.asarray(identifiers)
    held_out_truth = None
    if held_out is not None and len(held_out):
        held_out = tf.constant(np.asarray(held_out, np.float32))
        held_out_truth = identifiers[
            exact_top_k(held_out.numpy(), embeddings, 10)
        ]
    grid = list(_grid(settings.num_leaves)) if settings.num_leaves else []
    # each widening step rebuilds the tree, so a few steps at most
    for attempt in range(8):
        layer = ScaNNIndex(settings, k=k)
        layer.index(
            tf.constant(embeddings), identifiers=tf.constant(identifiers)
        )
        recall, ms, qps = _measure(layer, queries, identifiers[truth])
        held_out_recall = None
        if held_out_truth is not None:
            _, found = layer(held_out, k=10)
            held_out_recall = recall_at_k(found.numpy(), held_out_truth)
        reached = recall >= target_recall and (
            held_out_recall is None or held_out_recall >= target_recall
        )
        if reached or settings.kind == "brute_force" or attempt == 7:
            break
        # a rebuilt tree differs a little from the tuned one, and other
        # queries may need a wider search than the tuning ones: widen a step
        wider = [g for g in grid if g > settings.num_leaves_to_search]
        if not wider:
            break
        settings = dataclasses.replace(settings, num_leaves_to_search=wider[0])
    if not reached and settings.kind != "brute_force":
        log.warning(
            "recall@10 target %.3f not reached (%.4f) with %d of %d leaves "
            "searched",
            target_recall,
            recall if held_out_recall is None else min(recall, held_out_recall),
            settings.num_leaves_to_search,
            settings.num_leaves,
        )
    log.info(
        "index %s: recall@10 %.4f against exact search (%s on held-out "
        "queries), %.3f ms per query, %.0f queries/s batched",
        settings.kind,
        recall,
        "n/a" if held_out_recall is None else f"{held_out_recall:.4f}",
        ms,
        qps,
    )
    return TunedIndex(layer, settings, recall, ms, qps, held_out_recall)


def _tune(embeddings, queries, truth, settings, target, min_results=0):
    """The fastest search-time settings whose recall@10 reaches `target`.

    One searcher is built; the leaves searched and the candidates reordered
    are search-time arguments, so each trial costs only a search. For each
    number of leaves the fewest reordered candidates that reach the target
    are kept, and of the first few such pairs the one whose batched search
    is quickest (best of three) wins: searching more leaves can cost less
    than reordering more candidates, or the other way round, depending on
    the catalogue. Reorder counts below `min_results` are not tried.
    """
    leaves = settings.num_leaves
    reorders = [r for r in REORDER_GRID if r >= min_results] or [min_results]
    widest = dataclasses.replace(
        settings,
        num_leaves_to_search=leaves,
        num_reordering_candidates=reorders[-1],
    )
    searcher = scann_builder(embeddings, widest, 10).build()

    def search(leaves_to_search, reorder):
        return searcher.search_batched(
            queries,
            final_num_neighbors=10,
            leaves_to_search=leaves_to_search,
            pre_reorder_num_neighbors=reorder,
        )

    found = []
    for leaves_to_search in _grid(leaves):
        for reorder in reorders:
            result = search(leaves_to_search, reorder)
            if recall_at_k(result.indices.numpy(), truth) >= target:
                found.append((leaves_to_search, reorder))
                break
        if len(found) == TUNING_CANDIDATES or (
            found and found[-1][1] == reorders[0]
        ):
            # more leaves with the fewest candidates only cost more
            break
    if not found:
        log.warning(
            "recall@10 target %.3f not reached; searching every leaf", target
        )
        return widest

    def seconds(pair):
        search(*pair)  # warm
        times = []
        for _ in range(3):
            start = time.perf_counter()
            search(*pair)
            times.append(time.perf_counter() - start)
        return min(times)

    leaves_to_search, reorder = min(found, key=seconds)
    return dataclasses.replace(
        settings,
        num_leaves_to_search=leaves_to_search,
        num_reordering_candidates=reorder,
    )


def _grid(leaves: int):
    """Leaves to search, growing geometrically up to all of them."""
    value = max(1, leaves // 50)
    while value < leaves:
        yield value
        value = int(math.ceil(value * 1.5))
    yield leaves
