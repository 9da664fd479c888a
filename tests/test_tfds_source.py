"""Tests of data.tfds_source, offline through tfds.testing.mock_data."""

from __future__ import annotations

import dataclasses

import pytest

from data.load import load
from data.schema import INTERACTION_SCHEMA, ColumnMap
from data.tfds_source import default_columns

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def mocked(tmp_path, monkeypatch):
    """Random MovieLens-shaped examples; nothing is downloaded."""
    # An empty data folder: a real download would be needed without the mock.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with tfds.testing.mock_data(
        num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        yield


def test_movielens_defaults_fill_field_names():
    columns = default_columns("tfds:movielens/100k-ratings", ColumnMap(), "log")
    assert (columns.user, columns.item, columns.time, columns.weight) == (
        "user_id",
        "movie_id",
        "timestamp",
        "user_rating",
    )
    items = default_columns("tfds:movielens/100k-movies", columns, "items")
    assert (items.item_key, items.item_text, items.item_categories) == (
        "movie_id",
        "movie_title",
        "movie_genres",
    )
    # Names the user chose are kept; other entries are left alone.
    custom = dataclasses.replace(ColumnMap(), weight="bucketized_user_age")
    kept = default_columns("tfds:movielens/100k-ratings", custom, "log")
    assert kept.weight == "bucketized_user_age"
    assert default_columns("tfds:other", ColumnMap(), "log") == ColumnMap()


def test_movielens_ratings_and_movies(mocked):
    loaded = load(
        "tfds:movielens/100k-ratings", items="tfds:movielens/100k-movies"
    )
    table = loaded.interactions
    assert table.schema == INTERACTION_SCHEMA
    assert table.num_rows + loaded.report.duplicates_dropped == 12
    assert all(isinstance(v, str) for v in table.column("user_id").to_pylist())

    items = loaded.items
    assert items.text == "title" and items.categories == "categories"
    genres = {
        g for row in items.table.column("categories").to_pylist() for g in row
    }
    names = set(
        tfds.builder("movielens/100k-movies")
        .info.features["movie_genres"]
        .feature.names
    )
    # Genres come back as names, not class indices.
    assert genres and genres <= names


def test_generic_fields_through_column_map(mocked):
    columns = ColumnMap(
        user="user_zip_code", item="movie_id", time=None, weight="raw_user_age"
    )
    table = load("tfds:movielens/100k-ratings", columns=columns).interactions
    assert table.num_rows == 12
    assert table.column("timestamp").to_pylist() == list(range(1, 13))
