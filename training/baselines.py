"""Non-neural baselines reported beside the two-tower model.

Each baseline is fitted on a binary training matrix X [num_users + 1,
num_items] (row = user code, column j = item code j + 1, as in
`training.metrics`) and scores items with ``.scores(user_codes)``, which
plugs straight into `training.metrics.evaluate`:

- `Popularity`: the number of training users of each item.
- `ItemKNN`: cosine similarity between item columns over all neighbours,
  score = x_u @ S.
- `EASE`: the closed-form item-item model of Steck, "Embarrassingly
  Shallow Autoencoders for Sparse Data" (WWW 2019), score = x_u @ B.

The item-item models keep a dense [num_items, num_items] float32 matrix,
so they refuse item spaces above `max_dense_items`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

DEFAULT_MAX_DENSE_ITEMS = 20000
BASELINES = ("popularity", "item_knn", "ease")


class TooLargeError(ValueError):
    """The item space is too large for a dense item-item matrix."""


class Baseline(Protocol):
    def fit(self, x: sp.spmatrix) -> Baseline: ...

    def scores(self, user_codes: np.ndarray) -> np.ndarray: ...


def _binary(x: sp.spmatrix) -> sp.csr_matrix:
    """A float32 CSR copy of `x` with every stored entry set to 1."""
    x = sp.csr_matrix(x, dtype=np.float32, copy=True)
    x.sum_duplicates()
    x.eliminate_zeros()
    x.data[:] = 1.0
    return x


def _check_size(name: str, num_items: int, limit: int) -> None:
    if num_items > limit:
        gib = 4 * num_items**2 / 2**30
        raise TooLargeError(
            f"{name} needs a dense {num_items} x {num_items} float32 matrix "
            f"(~{gib:.1f} GiB) but max_dense_items is {limit}; raise the "
            "limit if the memory is there, or leave this baseline out"
        )


class Popularity:
    """Scores every item by how many training users interacted with it."""

    def __init__(self):
        self.counts: np.ndarray | None = None

    def fit(self, x: sp.spmatrix) -> Popularity:
        """Counts the users of each item in X [num_users + 1, num_items]."""
        x = _binary(x)
        self.counts = np.asarray(x.sum(axis=0), np.float32).ravel()
        return self

    def scores(self, user_codes: np.ndarray) -> np.ndarray:
        """[B] user codes -> [B, num_items] item counts (same per user)."""
        return np.repeat(self.counts[None, :], len(user_codes), axis=0)


class _ItemItem:
    """Scores as x_u @ W for a dense item-item matrix W."""

    def __init__(self, max_dense_items: int):
        self.max_dense_items = max_dense_items
        self.x: sp.csr_matrix | None = None
        self.weights: np.ndarray | None = None

    def scores(self, user_codes: np.ndarray) -> np.ndarray:
        """[B] user codes -> [B, num_items] scores x_u @ W."""
        return np.asarray(self.x[user_codes] @ self.weights, np.float32)


class ItemKNN(_ItemItem):
    """Item-based nearest neighbours with cosine similarity.

    S[i, j] = |U_i & U_j| / sqrt(|U_i| |U_j|) over the binary item columns,
    every neighbour kept, S[i, i] = 0; a user's score is x_u @ S.

    Args:
      max_dense_items: Largest item space accepted.
    """

    def __init__(self, max_dense_items: int = DEFAULT_MAX_DENSE_ITEMS):
        super().__init__(max_dense_items)

    def fit(self, x: sp.spmatrix) -> ItemKNN:
        """Fits on X [num_users + 1, num_items].

        Raises:
          TooLargeError: When num_items exceeds `max_dense_items`.
        """
        _check_size("item-kNN", x.shape[1], self.max_dense_items)
        self.x = _binary(x)
        cooc = np.asarray((self.x.T @ self.x).toarray(), np.float32)
        norms = np.sqrt(np.diag(cooc))
        # items without users have a zero norm and zero similarity
        inverse = np.divide(
            1.0, norms, out=np.zeros_like(norms), where=norms > 0
        )
        cooc *= inverse[:, None]
        cooc *= inverse[None, :]
        np.fill_diagonal(cooc, 0.0)
        self.weights = cooc
        return self


class EASE(_ItemItem):
    """EASE: a closed-form linear item-item model with a zero diagonal.

    G = X^T X + lambda I, P = G^-1, B = -P / diag(P) (column-wise) with
    diag(B) = 0; a user's score is x_u @ B.

    Args:
      lambda_: L2 regularisation added to the diagonal of the Gram matrix.
      max_dense_items: Largest item space accepted.
    """

    def __init__(
        self,
        lambda_: float = 200.0,
        max_dense_items: int = DEFAULT_MAX_DENSE_ITEMS,
    ):
        super().__init__(max_dense_items)
        self.lambda_ = lambda_

    def fit(self, x: sp.spmatrix) -> EASE:
        """Fits on X [num_users + 1, num_items].

        Raises:
          TooLargeError: When num_items exceeds `max_dense_items`.
        """
        _check_size("EASE", x.shape[1], self.max_dense_items)
        self.x = _binary(x)
        gram = np.asarray((self.x.T @ self.x).toarray(), np.float32)
        gram[np.diag_indices_from(gram)] += self.lambda_
        precision = np.linalg.inv(gram)
        weights = precision / (-np.diag(precision))[None, :]
        np.fill_diagonal(weights, 0.0)
        self.weights = weights.astype(np.float32, copy=False)
        return self


def make_baseline(
    name: str,
    max_dense_items: int = DEFAULT_MAX_DENSE_ITEMS,
    ease_lambda: float = 200.0,
) -> Baseline:
    """An unfitted baseline by name (one of `BASELINES`)."""
    if name == "popularity":
        return Popularity()
    if name == "item_knn":
        return ItemKNN(max_dense_items)
    if name == "ease":
        return EASE(lambda_=ease_lambda, max_dense_items=max_dense_items)
    raise ValueError(
        f"unknown baseline '{name}'; use one of {', '.join(BASELINES)}"
    )


def fit_baselines(
    x: sp.spmatrix,
    names: Sequence[str] = BASELINES,
    max_dense_items: int = DEFAULT_MAX_DENSE_ITEMS,
    ease_lambda: float = 200.0,
) -> dict[str, Baseline]:
    """Fits the named baselines, skipping those the item space is too big for.

    Args:
      x: [num_users + 1, num_items] binary training matrix.
      names: Baselines to fit, from `BASELINES`.
      max_dense_items: Largest item space of the item-item baselines.
      ease_lambda: L2 strength of EASE.

    Returns:
      Fitted baselines by name, in the order of `names`; a skipped one is
      absent and the reason is logged.
    """
    fitted = {}
    for name in names:
        model = make_baseline(name, max_dense_items, ease_lambda)
        try:
            fitted[name] = model.fit(x)
        except TooLargeError as error:
            logger.warning("skipping baseline %s: %s", name, error)
    return fitted
