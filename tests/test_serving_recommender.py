"""The Python API against a real export (tests/export_fixtures.py)."""

import json

import numpy as np
import pytest

from serving import calibration, export_dir, rerank
from serving.errors import (
    ExportFormatError,
    InvalidArgumentError,
    InvalidFilterError,
    InvalidKError,
    UnknownItemError,
    UnknownUserError,
)
from tests import export_fixtures

recommender = export_fixtures.recommender
serving_export = export_fixtures.serving_export


def _users(rec, n=20):
    """Known user ids: the synthetic data numbers users from 1."""
    ids = [str(u) for u in range(1, 200)]
    known = [b.user_id for b in rec.recommend_batch(ids, 1) if b.known]
    return known[:n]


def _exact_top(rec, query, k, banned=(), mask=None):
    scores = rec.item_embeddings @ query
    ids = np.asarray(rec.catalogue.item_ids)
    allowed = ~np.isin(ids, list(banned))
    if mask is not None:
        allowed &= mask
    scores = np.where(allowed, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order if np.isfinite(scores[i])]


def _same_ranking(got, sims, expected, rec, query):
    """Equal top-k up to ties in float32 similarity."""
    if got == expected:
        return
    exp_sims = np.sort(
        rec.item_embeddings[rec.catalogue.rows(expected)] @ query
    )
    np.testing.assert_allclose(np.sort(sims), exp_sims, atol=1e-5)


def test_recommend_matches_brute_force(recommender):
    rec = recommender
    for user in _users(rec, 10):
        query = rec.user_embedding(user)
        seen = rec.seen_items(user)
        got = rec.recommend(user, k=10)
        assert not got.exact
        expected = _exact_top(rec, query, 10, banned=seen)
        sims = [r.similarity for r in got.items]
        _same_ranking(got.item_ids, sims, expected, rec, query)
        assert not set(got.item_ids) & set(seen)
        assert sims == sorted(sims, reverse=True)

        # include seen: exact search over the whole catalogue
        everything = rec.recommend(user, k=10, exclude_seen=False)
        assert everything.exact
        expected = _exact_top(rec, query, 10)
        sims = [r.similarity for r in everything.items]
        _same_ranking(everything.item_ids, sims, expected, rec, query)


def test_results_carry_scores_and_metadata(recommender):
    user = _users(recommender, 1)[0]
    recs = recommender.recommend(user, k=5)
    assert recs.score_kind == "isotonic"
    assert recs.model_version == 1
    for r in recs.items:
        assert 0.0 <= r.score <= 1.0
        assert -1.0 <= r.similarity <= 1.0
        assert {"title", "categories", "year"} <= set(r.metadata)
    scores = [r.score for r in recs.items]
    assert scores == sorted(scores, reverse=True)  # calibration is monotone
    json.dumps(recs.to_dict())


def test_exclude(recommender):
    user = _users(recommender, 1)[0]
    first = recommender.recommend(user, k=10).item_ids
    again = recommender.recommend(user, k=10, exclude=first[:3] + ["nope"])
    assert not set(again.item_ids) & set(first[:3])
    assert again.item_ids[:7] == first[3:]


def test_history_and_similar(recommender):
    rec = recommender
    history = rec.catalogue.item_ids[:3]
    got = rec.recommend_for_history(history + ["no-such-item"], k=10)
    assert len(got.items) == 10
    assert not set(got.item_ids) & set(history)
    with pytest.raises(UnknownItemError, match="none of the 2 item ids"):
        rec.recommend_for_history(["x", "y"], k=5)

    item = rec.catalogue.item_ids[5]
    similar = rec.similar_items(item, k=10)
    query = rec.item_embeddings[5]
    expected = _exact_top(rec, query, 10, banned=[item])
    sims = [r.similarity for r in similar.items]
    _same_ranking(similar.item_ids, sims, expected, rec, query)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda r: r.recommend("no-such-user"), UnknownUserError, "user_id"),
        (lambda r: r.recommend("\ud800"), UnknownUserError, "user_id"),
        (lambda r: r.similar_items("no-such-item"), UnknownItemError, "item"),
        (lambda r: r.recommend("1", k=0), InvalidKError, "k must be in"),
        (lambda r: r.recommend("1", k=101), InvalidKError, "k must be in"),
        (lambda r: r.similar_items("1", k=2.5), InvalidKError, "integer"),
        (lambda r: r.recommend("1", diversity=2), InvalidArgumentError, "div"),
        (
            lambda r: r.recommend("1", filters={"genre": ["Drama"]}),
            InvalidFilterError,
            r"unknown field 'genre'; valid fields are \['categories'",
        ),
    ],
)
def test_errors(recommender, call, error, message):
    with pytest.raises(error, match=message):
        call(recommender)
    assert issubclass(InvalidKError, ValueError)


def test_filters_return_k_when_k_match(recommender):
    rec = recommender
    user = _users(rec, 1)[0]
    years = np.array([m.get("year") or np.nan for m in rec.catalogue.metadata])
    # A year range holding a few dozen items: the 100 over-fetched
    # candidates rarely hold 10 of them, so the exact search takes over.
    lo = float(np.nanquantile(years, 0.96))
    filters = {"year": {"min": lo}}
    mask = rec.catalogue.mask(filters)
    seen = rec.seen_items(user)
    matching = int((mask & ~np.isin(rec.catalogue.item_ids, seen)).sum())
    assert matching >= 10

    got = rec.recommend(user, k=10, filters=filters)
    assert len(got.items) == 10
    assert all(r.metadata["year"] >= lo for r in got.items)
    query = rec.user_embedding(user)
    expected = _exact_top(rec, query, 10, banned=seen, mask=mask)
    sims = [r.similarity for r in got.items]
    _same_ranking(got.item_ids, sims, expected, rec, query)

    # asking for more than match returns every match
    k = min(rec.max_k, matching + 5)
    assert len(rec.recommend(user, k=k, filters=filters).items) == matching


def test_filter_fallback_path_is_taken(recommender):
    rec = recommender
    user = _users(rec, 1)[0]
    # The user's least similar unseen item is far outside the index's
    # top max_k, so a filter matching only its title needs exact search.
    query = rec.user_embedding(user)
    ranked = _exact_top(rec, query, rec.num_items, banned=rec.seen_items(user))
    worst = rec.catalogue.metadata[rec.catalogue.row_of[ranked[-1]]]
    filters = {"title": [worst["title"]]}
    matching = int(rec.catalogue.mask(filters).sum())

    got = rec.recommend(user, k=3, filters=filters)
    assert got.exact
    assert ranked[-1] in got.item_ids
    assert all(r.metadata["title"] == worst["title"] for r in got.items)
    assert len(got.items) <= min(3, matching)

    # A filter the top items pass is answered from the over-fetched list.
    top = [rec.catalogue.metadata[rec.catalogue.row_of[i]] for i in ranked[:3]]
    common = sorted({c for m in top for c in m["categories"]})
    got = rec.recommend(user, k=3, filters={"categories": common})
    assert not got.exact
    assert got.item_ids == ranked[:3]


def test_diversity(recommender):
    rec = recommender
    user = _users(rec, 1)[0]
    plain = rec.recommend(user, k=10)
    assert rec.recommend(user, k=10, diversity=0.0).item_ids == plain.item_ids

    def spread(recs):
        rows = rec.catalogue.rows(recs.item_ids)
        return rerank.mean_pairwise_similarity(rec.item_embeddings[rows])

    diverse = rec.recommend(user, k=10, diversity=0.7)
    assert len(diverse.items) == 10
    assert spread(diverse) < spread(plain)
    assert diverse.item_ids[0] == plain.item_ids[0]


def test_batch_matches_single(recommender):
    rec = recommender
    users = _users(rec, 5)
    batch = list(rec.recommend_batch(users + ["nope"], 10, batch_size=2))
    assert [b.user_id for b in batch] == users + ["nope"]
    assert not batch[-1].known and batch[-1].items == []
    for b in batch[:-1]:
        assert [r.item_id for r in b.items] == rec.recommend(
            b.user_id, k=10
        ).item_ids


def test_calibration_beats_linear_on_held_out_users(serving_export):
    pairs = np.load(serving_export.run_dir / "calibration.npz")
    sims, labels, users = pairs["similarity"], pairs["label"], pairs["user"]
    assert labels.sum() > 100, "too few positive pairs to compare"
    # fit on half the calibration users, judge on the other half
    distinct = np.unique(users)
    rng = np.random.default_rng(0)
    held = np.isin(users, rng.choice(distinct, len(distinct) // 2, False))

    cal = calibration.fit_isotonic(sims[~held], labels[~held])
    scores = cal.apply(sims[held])

    assert np.all(np.diff(cal.apply(np.sort(sims[held]))) >= 0)
    assert scores.min() >= 0 and scores.max() <= 1
    isotonic = calibration.brier(scores, labels[held])
    linear = calibration.brier(
        calibration.linear().apply(sims[held]), labels[held]
    )
    assert isotonic < linear
    meta = json.loads(
        (serving_export.version_dir / "metadata.json").read_text()
    )
    assert meta["calibration"]["kind"] == "isotonic"


def test_versions_and_bad_directories(serving_export, tmp_path):
    assert export_dir.list_versions(serving_export.export_dir) == [1]
    with pytest.raises(ExportFormatError, match="version 7 not found"):
        export_dir.resolve(serving_export.export_dir, 7)
    with pytest.raises(ExportFormatError, match="no version directories"):
        export_dir.resolve(tmp_path)
    (tmp_path / "3").mkdir()  # no metadata.json yet: still being written
    assert export_dir.list_versions(tmp_path) == []
    version, path = export_dir.resolve(serving_export.version_dir)
    assert (version, path) == (1, serving_export.version_dir)
