"""Maximal marginal relevance (MMR) re-ranking for diverse results.

Carbonell and Goldstein (1998): pick, one at a time, the candidate that
maximises

    (1 - diversity) * similarity(query, c)
        - diversity * max over picked p of cosine(c, p)

so diversity 0 keeps the relevance order and diversity 1 ignores
relevance after the first pick.
"""

from __future__ import annotations

import numpy as np


def mmr(
    candidate_embeddings: np.ndarray,
    relevance: np.ndarray,
    k: int,
    diversity: float,
) -> np.ndarray:
    """Indices of `k` candidates in MMR order.

    Args:
      candidate_embeddings: `[num_candidates, dim]` unit-length rows.
      relevance: `[num_candidates]` query-candidate cosine similarity.
      k: how many to pick; at most `num_candidates` come back.
      diversity: lambda in [0, 1]; 0 is the plain relevance order.

    Returns:
      `[min(k, num_candidates)]` int64 indices into the candidates.
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1]; got {diversity}")
    relevance = np.asarray(relevance, dtype=np.float64)
    n = relevance.shape[0]
    k = min(k, n)
    if diversity == 0.0 or k <= 1:
        return np.argsort(-relevance, kind="stable")[:k].astype(np.int64)

    emb = np.asarray(candidate_embeddings, dtype=np.float64)
    pairwise = emb @ emb.T
    picked = np.empty(k, dtype=np.int64)
    available = np.ones(n, dtype=bool)
    # Largest similarity of each candidate to anything picked so far.
    redundancy = np.full(n, -np.inf)
    for step in range(k):
        if step == 0:
            gain = relevance.copy()
        else:
            gain = (1 - diversity) * relevance - diversity * redundancy
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        picked[step] = best
        available[best] = False
        redundancy = np.maximum(redundancy, pairwise[best])
    return picked


def mean_pairwise_similarity(embeddings: np.ndarray) -> float:
    """Mean cosine over distinct pairs of unit-length rows (0 if < 2)."""
    n = embeddings.shape[0]
    if n < 2:
        return 0.0
    sims = embeddings @ embeddings.T
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))
