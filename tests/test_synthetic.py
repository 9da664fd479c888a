"""Tests of data.synthetic: determinism and the promised shape of the data."""

from __future__ import annotations

import numpy as np
import pytest

from data.load import load
from data.schema import ColumnMap
from data.synthetic import GENRES, generate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    paths = generate(folder, seed=3, num_users=600, num_items=500)
    loaded = load(
        str(paths["interactions"]),
        items=str(paths["items"]),
        users=str(paths["users"]),
        columns=ColumnMap(
            weight="rating",
            item_text="title",
            item_categories="genres",
            item_numeric=("year",),
        ),
    )
    return paths, loaded


def _codes(table, column):
    return np.asarray(table.column(column).to_pylist(), dtype=np.int64) - 1


def test_deterministic(dataset, tmp_path):
    paths, _ = dataset
    again = generate(tmp_path, seed=3, num_users=600, num_items=500)
    for key, path in paths.items():
        assert path.read_bytes() == again[key].read_bytes(), key
    other = generate(tmp_path / "other", seed=4, num_users=600, num_items=500)
    assert (
        other["interactions"].read_bytes() != paths["interactions"].read_bytes()
    )


def test_loads_cleanly_with_min_five_per_user(dataset):
    _, loaded = dataset
    assert loaded.report.duplicates_dropped == 0
    assert loaded.report.unknown_items == 0
    users = _codes(loaded.interactions, "user_id")
    per_user = np.bincount(users, minlength=600)
    assert per_user.min() >= 5
    # Heavy tail: the busiest users do many times the median.
    assert per_user.max() > 5 * np.median(per_user)


def test_long_tail_and_cold_items(dataset):
    _, loaded = dataset
    counts = np.bincount(_codes(loaded.interactions, "item_id"), minlength=500)
    top = np.sort(counts)[::-1]
    # The top 20% of items take about half the interactions or more.
    assert top[:100].sum() > 0.45 * counts.sum()
    cold = (counts == 0).mean()
    assert 0.01 <= cold <= 0.08
    assert loaded.items.table.num_rows == 500
    genres = {
        g
        for row in loaded.items.table.column("categories").to_pylist()
        for g in row
    }
    assert genres <= set(GENRES) and len(genres) >= 15


def test_time_span_and_order(dataset):
    _, loaded = dataset
    times = np.asarray(loaded.interactions.column("timestamp"))
    assert np.all(np.diff(times) >= 0)  # The file is in time order.
    days = (times.max() - times.min()) / 86400
    assert 600 < days <= 731


def test_history_predicts_better_than_popularity(dataset):
    # Hold out each user's last interaction; rank unseen items by how well
    # their genres match the user's history versus by popularity alone.
    _, loaded = dataset
    users = _codes(loaded.interactions, "user_id")
    items = _codes(loaded.interactions, "item_id")
    last = np.zeros(len(users), dtype=bool)
    last[len(users) - 1 - np.unique(users[::-1], return_index=True)[1]] = True
    genres = loaded.items.table.column("categories").to_pylist()
    names = sorted({g for row in genres for g in row})
    member = np.zeros((500, len(names)))
    for i, row in enumerate(genres):
        member[i, [names.index(g) for g in row]] = 1
    member /= member.sum(1, keepdims=True)

    train = ~last
    popularity = np.bincount(items[train], minlength=500).astype(float)
    profile = np.zeros((600, len(names)))
    np.add.at(profile, users[train], member[items[train]])
    profile /= profile.sum(1, keepdims=True)
    seen = np.zeros((600, 500), dtype=bool)
    seen[users[train], items[train]] = True

    def hit_rate(scores, k=20):
        scores = np.where(seen, -np.inf, scores)
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        return np.mean(
            [items[i] in top[users[i]] for i in np.flatnonzero(last)]
        )

    by_popularity = hit_rate(np.tile(popularity, (600, 1)))
    by_history = hit_rate(
        5 * profile @ member.T + 0.5 * np.log1p(popularity)[None, :]
    )
    assert by_history > 1.5 * by_popularity


def test_cli_writes_files(tmp_path):
    from data.synthetic import main

    main(["--output", str(tmp_path), "--users", "50", "--items", "60"])
    assert (tmp_path / "interactions.csv").exists()
    assert (
        (tmp_path / "users.csv")
        .read_text()
        .startswith('"user_id","age_group","country"')
    )
