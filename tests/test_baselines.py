"""Tests of the baselines: hand-worked scores and the ML-100K reference."""

import math
import pathlib

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

import training  # noqa: F401
from data.split import split_interactions
from data.vocab import Encoder
from training.baselines import (
    EASE,
    ItemKNN,
    Popularity,
    TooLargeError,
    fit_baselines,
)
from training.metrics import evaluate, interactions_matrix

ML_100K = (
    pathlib.Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "ml-100k"
)

# Row 0 is the unknown user. Item 0 has users {1, 3}, item 1 {1, 2, 3},
# item 2 {2, 3}.
X = sp.csr_matrix(
    np.array(
        [
            [0, 0, 0],
            [1, 1, 0],
            [0, 1, 1],
            [1, 1, 1],
        ],
        np.float32,
    )
)


def test_popularity_counts_users():
    scores = Popularity().fit(X).scores(np.array([1, 2]))
    np.testing.assert_allclose(scores, [[2, 3, 2], [2, 3, 2]])


def test_item_knn_cosine():
    # co-occurrences: (0,1) = 2, (0,2) = 1, (1,2) = 2; norms sqrt(2),
    # sqrt(3), sqrt(2). S01 = S12 = 2/sqrt(6), S02 = 1/2, diagonal 0.
    model = ItemKNN().fit(X)
    s = 2 / math.sqrt(6)
    np.testing.assert_allclose(
        model.weights, [[0, s, 0.5], [s, 0, s], [0.5, s, 0]], rtol=1e-6
    )
    # user 1 holds items 0 and 1: rows 0 + 1 of S
    np.testing.assert_allclose(
        model.scores(np.array([1])), [[s, s, 0.5 + s]], rtol=1e-6
    )


def test_ease_closed_form():
    # G + I = [[3, 2, 1], [2, 4, 2], [1, 2, 3]], determinant 16, so
    # P = [[8, -4, 0], [-4, 8, -4], [0, -4, 8]] / 16; diag(P) = 1/2 and
    # B = -P / diag(P) = [[0, .5, 0], [.5, 0, .5], [0, .5, 0]].
    model = EASE(lambda_=1.0).fit(X)
    np.testing.assert_allclose(
        model.weights,
        [[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]],
        atol=1e-6,
    )
    # user 3 holds all three items: column sums of B
    np.testing.assert_allclose(
        model.scores(np.array([3])), [[0.5, 1.0, 0.5]], atol=1e-6
    )


@pytest.mark.parametrize("model", [ItemKNN, EASE])
def test_dense_models_refuse_large_item_spaces(model):
    with pytest.raises(TooLargeError, match="max_dense_items"):
        model(max_dense_items=2).fit(X)


def test_fit_baselines_skips_and_logs(caplog):
    fitted = fit_baselines(X, max_dense_items=2)
    assert list(fitted) == ["popularity"]
    assert "skipping baseline item_knn" in caplog.text
    assert "skipping baseline ease" in caplog.text


def test_binarises_weights():
    weighted = X * 5.0
    np.testing.assert_allclose(
        ItemKNN().fit(weighted).weights, ItemKNN().fit(X).weights
    )


def _load_ml_100k() -> pa.Table:
    path = ML_100K / "interactions.csv"
    try:
        from data.load import load
    except ImportError:
        load = None
    if load is not None:
        return load(str(path)).interactions

    import pyarrow.csv as pa_csv

    raw = pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types={"user_id": pa.string(), "item_id": pa.string()}
        ),
    )
    n = raw.num_rows
    return pa.table(
        {
            "user_id": raw.column("user_id"),
            "item_id": raw.column("item_id"),
            "timestamp": pa.compute.cast(raw.column("timestamp"), pa.int64()),
            "weight": pa.array(np.ones(n, np.float32)),
            "row": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        }
    )


def _ties_by_item_id(table: pa.Table) -> pa.Table:
    """Renumbers ``row`` so equal timestamps are ordered by item id string."""
    order = pa.compute.sort_indices(
        table, [("timestamp", "ascending"), ("item_id", "ascending")]
    )
    rows = np.empty(table.num_rows, np.int64)
    rows[np.asarray(order)] = np.arange(1, table.num_rows + 1)
    return table.set_column(
        table.schema.get_field_index("row"), "row", pa.array(rows)
    )


# ML-100K logs many ratings of one user in the same second, so the held-out
# set depends on how timestamp ties are ordered. The published reference
# numbers for this data set (popularity 0.115, item-kNN 0.189, EASE 0.199
# recall@10) are reproduced within 0.001 on every metric when ties are
# ordered by item id as a string; the file order of interactions.csv, which
# docs/evaluation.md prescribes, gives about 5% higher numbers.
EXPECTED_RECALL_AT_10 = {
    "item_id": {"popularity": 0.115, "item_knn": 0.189, "ease": 0.199},
    "file": {"popularity": 0.1205, "item_knn": 0.1971, "ease": 0.2083},
}


@pytest.mark.skipif(
    not (ML_100K / "interactions.csv").exists(),
    reason=f"ML-100K not found at {ML_100K}",
)
@pytest.mark.parametrize("ties", ["item_id", "file"])
def test_ml_100k_baselines(ties):
    table = _load_ml_100k()
    if ties == "item_id":
        table = _ties_by_item_id(table)
    split = split_interactions(table, "temporal")
    training_part = pa.concat_tables([split.train, split.validation])
    encoder = Encoder(training_part)
    seen = interactions_matrix(training_part, encoder).matrix
    test = interactions_matrix(split.test, encoder)

    fitted = fit_baselines(seen)
    assert list(fitted) == ["popularity", "item_knn", "ease"]
    for name, model in fitted.items():
        result = evaluate(
            model.scores, seen, test.matrix, heldout_counts=test.counts
        )
        assert result.num_users == 943
        assert result.metrics["recall@10"] == pytest.approx(
            EXPECTED_RECALL_AT_10[ties][name], abs=0.005
        )
