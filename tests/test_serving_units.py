"""Unit tests of the serving pieces that need no export: calibration,
catalogue filters and MMR re-ranking."""

import json

import numpy as np
import pytest

from serving import calibration, rerank
from serving.catalogue import Catalogue
from serving.errors import InvalidFilterError

# Calibration.


def test_linear_is_one_plus_cosine_over_two():
    cal = calibration.linear()
    # (1 + c) / 2 at c = -1, -0.5, 0, 0.6, 1; padding (-inf) shows as 0.
    got = cal.apply([-1.0, -0.5, 0.0, 0.6, 1.0, -np.inf])
    np.testing.assert_allclose(got, [0.0, 0.25, 0.5, 0.8, 1.0, 0.0])
    assert cal.kind == "linear"


def test_isotonic_by_hand():
    # Labels 0 | 1, 0, 0 | 1, 1 at sims 0.1..0.6: pool-adjacent-violators
    # merges the middle three into one block of mean 1/3. Between block
    # ends the map is linear: at 0.15, half way from 0 to 1/3.
    # (Bins of one pair: the plain isotonic regression.)
    sims = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    labels = [0, 1, 0, 0, 1, 1]
    cal = calibration.fit_isotonic(sims, labels, min_pairs_per_bin=1)
    np.testing.assert_allclose(
        cal.apply([0.0, 0.1, 0.15, 0.3, 0.4, 0.5, 0.9]),
        [0.0, 0.0, 1 / 6, 1 / 3, 1 / 3, 1.0, 1.0],
        rtol=1e-6,
    )
    assert cal.kind == "isotonic" and cal.num_pairs == 6


def test_isotonic_over_bins_by_hand():
    # Bins of two pairs (given out of order): sims 0.15, 0.35, 0.55, 0.75
    # with positive rates 0, 1/2, 1/2, 1, already increasing. Between bin
    # means the map is linear; outside them it is flat.
    sims = [0.8, 0.1, 0.3, 0.2, 0.5, 0.4, 0.6, 0.7]
    labels = [1, 0, 1, 0, 0, 0, 1, 1]
    cal = calibration.fit_isotonic(sims, labels, min_pairs_per_bin=2)
    np.testing.assert_allclose(
        cal.apply([0.0, 0.15, 0.25, 0.45, 0.65, 0.75, 0.9]),
        [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0],
        rtol=1e-6,
    )
    # too few pairs for two bins: one bin, the overall rate everywhere
    one = calibration.fit_isotonic(sims, labels, min_pairs_per_bin=5)
    np.testing.assert_allclose(one.apply([0.0, 0.5, 1.0]), [0.5] * 3)


def test_isotonic_monotone_bounded_round_trip():
    rng = np.random.default_rng(0)
    sims = rng.uniform(-1, 1, 5000)
    labels = (rng.random(5000) < (sims + 1) ** 2 / 5).astype(np.int8)
    cal = calibration.fit_isotonic(sims, labels)
    grid = np.linspace(-2, 2, 401)
    scores = cal.apply(grid)
    assert np.all(np.diff(scores) >= 0)
    assert scores.min() >= 0 and scores.max() <= 1

    text = json.dumps(cal.to_dict())
    again = calibration.Calibration.from_dict(json.loads(text))
    np.testing.assert_array_equal(again.apply(grid), scores)
    assert calibration.Calibration.from_dict(None).kind == "linear"


def test_brier_by_hand():
    # ((0.2-0)^2 + (0.6-1)^2) / 2 = (0.04 + 0.16) / 2
    assert calibration.brier([0.2, 0.6], [0, 1]) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "sims, labels, message",
    [
        ([], [], "no calibration pairs"),
        ([0.1, 0.2], [1], "one label per similarity"),
        ([0.1, np.nan], [0, 1], "NaN"),
        ([0.1, 0.2], [0, 2], "only 0 and 1"),
    ],
)
def test_fit_isotonic_rejects(sims, labels, message):
    with pytest.raises(ValueError, match=message):
        calibration.fit_isotonic(sims, labels)


def test_from_dict_rejects_bad_breakpoints():
    with pytest.raises(ValueError, match="non-decreasing"):
        calibration.Calibration.from_dict(
            {"kind": "isotonic", "x": [0, 1], "y": [0.5, 0.1]}
        )


# Catalogue filters.


@pytest.fixture
def catalogue():
    ids = ["a", "b", "c", "d", "e"]
    meta = [
        {"title": "A", "categories": ["Drama"], "year": 1990},
        {"title": "B", "categories": ["Comedy", "Drama"], "year": 1995},
        {"title": "C", "categories": ["Comedy"], "year": 2001},
        {"title": "D", "categories": [], "year": None},
        {"title": "E", "categories": ["Horror"], "year": 1999.5},
    ]
    return Catalogue(ids, meta)


@pytest.mark.parametrize(
    "filters, expected",
    [
        (None, None),
        ({"categories": ["Comedy"]}, "bc"),
        ({"categories": ["Horror", "Drama"]}, "abe"),
        ({"year": {"min": 1995}}, "bce"),
        ({"year": {"max": 1995}}, "ab"),
        ({"year": {"min": 1991, "max": 2000}}, "be"),
        ({"categories": ["Drama"], "year": {"min": 1991}}, "b"),
        ({"title": ["C", "E"]}, "ce"),
        ({"title": "D"}, "d"),
        ({"categories": ["Western"]}, ""),
    ],
)
def test_filter_mask(catalogue, filters, expected):
    mask = catalogue.mask(filters)
    if expected is None:
        assert mask is None
    else:
        got = "".join(np.asarray(catalogue.item_ids)[mask])
        assert got == expected


def test_field_kinds(catalogue):
    kinds = {n: f.kind for n, f in catalogue.fields.items()}
    assert kinds == {"categories": "list", "title": "text", "year": "numeric"}


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"genre": ["Drama"]}, r"unknown field 'genre'.*categories"),
        ({"year": 1990}, r"filters.year: expected a range"),
        ({"year": {"from": 1990}}, r"only 'min' and 'max'"),
        ({"year": {"min": "x"}}, r"filters.year.min: expected a number"),
        ({"categories": {"min": 1}}, r"filters.categories: expected a list"),
    ],
)
def test_filter_errors(catalogue, filters, message):
    with pytest.raises(InvalidFilterError, match=message):
        catalogue.mask(filters)


# MMR.


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mmr_zero_is_relevance_order():
    emb = _unit(np.random.default_rng(1).normal(size=(20, 8)))
    relevance = np.random.default_rng(2).uniform(-1, 1, 20)
    got = rerank.mmr(emb, relevance, 10, 0.0)
    np.testing.assert_array_equal(got, np.argsort(-relevance)[:10])


def test_mmr_by_hand():
    # Candidates 0 and 1 are the same direction, 2 is orthogonal.
    emb = _unit([[1, 0], [1, 0], [0, 1]])
    relevance = np.array([0.9, 0.8, 0.5])
    # Step 2 with lambda 0.5: cand 1 gains 0.5*0.8 - 0.5*1 = -0.1,
    # cand 2 gains 0.5*0.5 - 0.5*0 = 0.25, so 2 comes second.
    np.testing.assert_array_equal(rerank.mmr(emb, relevance, 3, 0.5), [0, 2, 1])
    np.testing.assert_array_equal(rerank.mmr(emb, relevance, 3, 0.0), [0, 1, 2])


def test_mmr_more_diversity_lowers_pairwise_similarity():
    rng = np.random.default_rng(3)
    # Clustered candidates, so the top of the relevance order is redundant.
    centres = _unit(rng.normal(size=(5, 16)))
    emb = _unit(
        centres[rng.integers(0, 5, 100)] + 0.2 * rng.normal(size=(100, 16))
    )
    relevance = emb @ centres[0] + 0.05 * rng.normal(size=100)
    means = [
        rerank.mean_pairwise_similarity(
            emb[rerank.mmr(emb, relevance, 10, lam)]
        )
        for lam in (0.0, 0.3, 0.7)
    ]
    assert means[0] > means[1] > means[2]
