"""Splits of tiny hand-made logs (data/split.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from data.schema import DataError
from data.split import split_interactions
from tests.conftest import interaction_log


def _user_log(user: str, n: int, start: int = 0):
    """`n` interactions of `user` with items u0..u{n-1} at times 1..n."""
    return [(user, f"{user}{i}", start + i + 1) for i in range(n)]


def _items(table: pa.Table) -> list[str]:
    return table.column("item_id").to_pylist()


@pytest.mark.parametrize(
    "n, fraction, held",
    [
        # 4 < min_interactions: the user stays wholly in training
        (4, 0.2, 0),
        # 5 * 0.2 = 1.0 -> 1
        (5, 0.2, 1),
        # 7 * 0.2 = 1.4 -> 1 (rounded down)
        (7, 0.2, 1),
        # 8 * 0.2 = 1.6 -> 2 (rounded up)
        (8, 0.2, 2),
        # 13 * 0.2 = 2.6 -> 3
        (13, 0.2, 3),
        # 10 * 0.25 = 2.5 -> 3: half rounds up (Python's round gives 2)
        (10, 0.25, 3),
        # 6 * 0.01 = 0.06 -> 0, but at least one row is held out
        (6, 0.01, 1),
    ],
)
def test_temporal_holds_out_the_last_share_of_each_user(n, fraction, held):
    table = interaction_log(_user_log("u", n))

    split = split_interactions(
        table, "temporal", test_fraction=fraction, validation_fraction=0.2
    )

    # the test set is the user's last `held` items in time
    assert _items(split.test) == [f"u{i}" for i in range(n - held, n)]
    assert split.sizes()["test"] == held
    assert sum(split.sizes().values()) == n


def test_temporal_orders_by_time_not_by_file():
    # file order is not time order: u's latest item (t=9) comes first
    table = interaction_log(
        [
            ("u", "late", 9),
            ("u", "a", 1),
            ("u", "b", 2),
            ("u", "c", 3),
            ("u", "d", 4),
        ]
    )

    split = split_interactions(table, "temporal")

    # 5 rows -> 1 held out: the latest, though it is the first row in file
    assert _items(split.test) == ["late"]
    # 4 training rows < 5: no validation, and input order is kept
    assert _items(split.train) == ["a", "b", "c", "d"]
    assert split.validation.num_rows == 0


def test_temporal_ties_keep_file_order():
    # five rows at the same second: the last in the file is the latest
    table = interaction_log([("u", f"i{r}", 100) for r in range(5)])

    split = split_interactions(table, "temporal")

    assert _items(split.test) == ["i4"]


def test_validation_is_carved_from_training_only():
    # a: 10 rows -> test 2 (a8, a9); 8 left -> validation 2 (a6, a7);
    #    training 6.
    # b: 6 rows -> test 1 (b5); 5 left -> validation 1 (b4); training 4.
    # c: 5 rows -> test 1 (c4); 4 left < 5 -> no validation; training 4.
    # d: 3 rows -> all training.
    rows = (
        _user_log("a", 10)
        + _user_log("b", 6)
        + _user_log("c", 5)
        + _user_log("d", 3)
    )
    # interleave users so that per-user grouping is really exercised
    rows = sorted(rows, key=lambda r: (r[2], r[0]))
    table = interaction_log(rows)

    split = split_interactions(table, "temporal")

    assert sorted(_items(split.test)) == ["a8", "a9", "b5", "c4"]
    assert sorted(_items(split.validation)) == ["a6", "a7", "b4"]
    assert sorted(_items(split.train)) == sorted(
        [f"a{i}" for i in range(6)]
        + [f"b{i}" for i in range(4)]
        + [f"c{i}" for i in range(4)]
        + ["d0", "d1", "d2"]
    )
    assert split.sizes() == {"train": 17, "validation": 3, "test": 4}
    # each part keeps the input's row order
    for part in (split.train, split.validation, split.test):
        rows_of_part = part.column("row").to_pylist()
        assert rows_of_part == sorted(rows_of_part)


def test_random_is_seeded_and_per_user():
    rows = [r for u in "abcdef" for r in _user_log(u, 10)]
    table = interaction_log(rows)

    first = split_interactions(table, "random", seed=3)
    again = split_interactions(table, "random", seed=3)
    other = split_interactions(table, "random", seed=4)

    for part in ("train", "validation", "test"):
        assert _items(getattr(first, part)) == _items(getattr(again, part))
    assert _items(first.test) != _items(other.test)
    # per user, the same counts as the temporal split: 10 -> 2 test,
    # 8 -> 2 validation, 6 training
    for split in (first, other):
        tests = split.test.column("user_id").to_pylist()
        valids = split.validation.column("user_id").to_pylist()
        assert sorted(tests) == sorted(list("abcdef") * 2)
        assert sorted(valids) == sorted(list("abcdef") * 2)
        assert split.train.num_rows == 36
    # with 6 users x 10 rows, random picks are not simply the latest
    assert _items(first.test) != _items(split_interactions(table).test)


def test_time_cutoff_given():
    # one user, times 1..10; rows at or after 9 are the test set;
    # validation: 0.8 quantile ("higher") of times 1..8 is the value at
    # position 7 * 0.8 = 5.6 -> 6, i.e. time 7 -> validation 7, 8
    table = interaction_log(_user_log("u", 10))

    split = split_interactions(table, "time", cutoff=9)

    assert _items(split.test) == ["u8", "u9"]
    assert _items(split.validation) == ["u6", "u7"]
    assert _items(split.train) == [f"u{i}" for i in range(6)]


def test_time_cutoff_defaults_to_the_quantile():
    # times 1..10, test_fraction 0.2: 0.8 quantile ("higher") sits at
    # position 9 * 0.8 = 7.2 -> 8, i.e. time 9
    table = interaction_log(_user_log("u", 10))

    split = split_interactions(table, "time")

    assert _items(split.test) == ["u8", "u9"]


@pytest.mark.parametrize("cutoff", [0, 1, 11, 10**10])
def test_time_cutoff_outside_the_log_names_the_range(cutoff):
    table = interaction_log(_user_log("u", 10))

    with pytest.raises(DataError, match=r"1 to 10"):
        split_interactions(table, "time", cutoff=cutoff)


def test_none_keeps_everything_but_a_validation_slice():
    # 10 rows -> no test; validation carved per user: 10 * 0.2 = 2
    table = interaction_log(_user_log("u", 10) + _user_log("v", 3))

    split = split_interactions(table, "none")

    assert split.test.num_rows == 0
    assert _items(split.validation) == ["u8", "u9"]
    assert split.sizes() == {"train": 11, "validation": 2, "test": 0}


def test_unknown_method_is_a_data_error():
    with pytest.raises(DataError, match="unknown split method 'later'"):
        split_interactions(interaction_log(_user_log("u", 5)), "later")


@pytest.mark.parametrize("method", ["temporal", "random", "none"])
def test_empty_log_gives_empty_parts(method):
    split = split_interactions(interaction_log([]), method)

    assert split.sizes() == {"train": 0, "validation": 0, "test": 0}


def test_split_is_vectorised_over_many_users():
    # 2000 users with 5..14 rows each; a sanity check of the per-user
    # arithmetic at scale against a plain Python count.
    rng = np.random.default_rng(0)
    counts = rng.integers(5, 15, size=2000)
    rows = [
        (f"u{u}", f"i{j}", int(t))
        for u, n in enumerate(counts)
        for j, t in enumerate(rng.integers(0, 50, size=n))
    ]
    table = interaction_log(rows)

    split = split_interactions(table, "temporal")

    expected_test = sum(max(int(n * 0.2 + 0.5), 1) for n in counts)
    assert split.test.num_rows == expected_test
