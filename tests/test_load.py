"""Tests of data.load, data.cli and data.inspect."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.cli import add_data_arguments, columns_from_args, load_from_args
from data.load import load
from data.schema import INTERACTION_SCHEMA, ColumnMap, DataError

LOG = "user_id,item_id,rating,timestamp\n007,01,4,100\n008,02,3.5,200\n"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return parser.parse_args(argv)


def test_csv_keeps_ids_as_strings_and_fills_schema(write_text):
    path = write_text("log.csv", LOG)
    loaded = load(str(path), columns=ColumnMap(weight="rating"))
    table = loaded.interactions
    assert table.schema == INTERACTION_SCHEMA
    assert table.column("user_id").to_pylist() == ["007", "008"]
    assert table.column("item_id").to_pylist() == ["01", "02"]
    assert table.column("timestamp").to_pylist() == [100, 200]
    assert table.column("weight").to_pylist() == [4.0, 3.5]
    assert table.column("row").to_pylist() == [1, 2]
    assert loaded.report.rows_read == 2


def test_no_weight_column_weighs_one_and_no_time_uses_rows(write_text):
    path = write_text("log.csv", "user_id,item_id\na,x\nb,y\na,x\n")
    loaded = load(str(path), columns=ColumnMap(time=None))
    table = loaded.interactions
    assert table.column("weight").to_pylist() == [1.0, 1.0, 1.0]
    # File order stands in for time, so a repeat is not a duplicate.
    assert table.column("timestamp").to_pylist() == [1, 2, 3]
    assert loaded.report.duplicates_dropped == 0


@pytest.mark.parametrize(
    "name, content",
    [
        ("log.tsv", LOG.replace(",", "\t")),
        ("log.csv.gz", LOG),
        ("log.tsv.gz", LOG.replace(",", "\t")),
        (
            "log.jsonl",
            '{"user_id": "007", "item_id": "01", "rating": 4, '
            '"timestamp": 100}\n'
            '{"user_id": "008", "item_id": "02", "rating": 3.5, '
            '"timestamp": 200}\n',
        ),
        (
            "log.ndjson.gz",
            '{"user_id": "007", "item_id": "01", "rating": 4, '
            '"timestamp": 100}\n'
            '{"user_id": "008", "item_id": "02", "rating": 3.5, '
            '"timestamp": 200}\n',
        ),
    ],
)
def test_text_formats(write_text, name, content):
    path = write_text(name, content)
    table = load(str(path), columns=ColumnMap(weight="rating")).interactions
    assert table.column("user_id").to_pylist() == ["007", "008"]
    assert table.column("timestamp").to_pylist() == [100, 200]
    assert table.column("weight").to_pylist() == [4.0, 3.5]


def test_parquet_with_integer_ids(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": [7, 8],
                "item_id": [1, 2],
                "timestamp": [100, 200],
            }
        ),
        path,
    )
    table = load(str(path)).interactions
    assert table.column("user_id").to_pylist() == ["7", "8"]
    assert table.column("timestamp").to_pylist() == [100, 200]


def test_folder_of_shards_continues_rows(write_text, tmp_path):
    write_text("shards/part-1.csv", "user_id,item_id,timestamp\na,x,5\n")
    write_text("shards/part-0.csv", "user_id,item_id,timestamp\nb,y,1\nc,z,2\n")
    table = load(str(tmp_path / "shards")).interactions
    assert table.column("user_id").to_pylist() == ["b", "c", "a"]
    assert table.column("row").to_pylist() == [1, 2, 3]


def test_error_in_shard_names_that_shard(write_text, tmp_path):
    write_text("shards/part-0.csv", "user_id,item_id,timestamp\nb,y,1\n")
    write_text("shards/part-1.csv", "user_id,item_id,timestamp\na,x,soon\n")
    with pytest.raises(DataError) as error:
        load(str(tmp_path / "shards"))
    assert "part-1.csv" in str(error.value)
    assert error.value.row == 1


def test_iso_and_unix_timestamps(write_text):
    path = write_text(
        "log.csv",
        "user_id,item_id,timestamp\n"
        "a,x,2021-01-01\n"
        "a,y,2021-01-01T00:00:10Z\n"
        "a,z,2021-01-01T02:00:00+02:00\n"
        "a,w,2021-01-01 00:00:30\n"
        "b,x,1609459200.7\n"
        "b,y,1609459200\n",
    )
    times = load(str(path)).interactions.column("timestamp").to_pylist()
    day = 1609459200  # 2021-01-01T00:00:00Z
    assert times == [day, day + 10, day, day + 30, day, day]


def test_duplicates_dropped_and_counted(write_text, caplog):
    path = write_text(
        "log.csv",
        "user_id,item_id,timestamp\na,x,1\nb,x,1\na,x,1\na,x,2\na,x,1\n",
    )
    loaded = load(str(path))
    assert loaded.report.duplicates_dropped == 2
    assert loaded.interactions.column("row").to_pylist() == [1, 2, 4]
    # the repeats of row 1 are rows 3 and 5
    assert "duplicate" in caplog.text and "rows 3, 5 (" in caplog.text


@pytest.mark.parametrize("policy, rows", [("keep", 3), ("drop", 2)])
def test_unknown_items(write_text, caplog, policy, rows):
    log = write_text(
        "log.csv", "user_id,item_id,timestamp\na,1,1\na,2,2\nb,9,3\n"
    )
    items = write_text("items.csv", "item_id,title\n1,One\n2,Two\n")
    loaded = load(str(log), items=str(items), unknown_items=policy)
    assert loaded.report.unknown_items == 1
    assert loaded.report.unknown_items_dropped == (policy == "drop")
    assert loaded.interactions.num_rows == rows
    assert "'9'" in caplog.text
    assert "row 3 (" in caplog.text and "column 'item_id'" in caplog.text


def test_bad_unknown_items_policy(write_text):
    log = write_text("log.csv", LOG)
    with pytest.raises(DataError, match="keep"):
        load(str(log), unknown_items="ignore")


def test_item_and_user_tables(write_text):
    log = write_text("log.csv", LOG)
    items = write_text(
        "items.csv",
        "item_id,name,tags,year,budget\n"
        '01,One,"a| b||c",1999,\n'
        "02,Two,,unknown,3.5\n",
    )
    users = write_text("users.csv", "user_id,age,country\n007,,DE\n008,30,\n")
    columns = ColumnMap(
        item_text="name",
        item_categories="tags",
        item_numeric=("year", "budget"),
    )
    loaded = load(str(log), items=str(items), users=str(users), columns=columns)
    item_table = loaded.items
    assert item_table.text == "title" and item_table.categories == "categories"
    assert item_table.numeric == ("year", "budget")
    assert item_table.table.column("title").to_pylist() == ["One", "Two"]
    assert item_table.table.column("categories").to_pylist() == [
        ["a", "b", "c"],
        [],
    ]
    year = item_table.table.column("year").to_numpy()
    assert item_table.table.column("year").type == pa.float32()
    assert year[0] == 1999 and np.isnan(year[1])
    assert np.isnan(item_table.table.column("budget").to_numpy()[0])
    assert loaded.users.features == ("age", "country")
    assert loaded.users.table.column("age").to_pylist() == ["", "30"]
    assert loaded.users.table.column("country").to_pylist() == ["DE", ""]


# Every validation error names the file, the row (when there is one) and the
# column, and says how to fix it.
BAD_LOGS = [
    ("missing.csv", "uid,item_id,timestamp\na,x,1\n", None, "user_id",
     "--user-col"),
    ("empty.csv", "user_id,item_id,timestamp\n", None, None, "no data rows"),
    ("blank.csv", "", None, None, "empty"),
    ("time.csv", "user_id,item_id,timestamp\na,x,1\na,y,yesterday\n", 2,
     "timestamp", "'yesterday'"),
    ("month.csv", "user_id,item_id,timestamp\na,x,2021-13-01\n", 1,
     "timestamp", "'2021-13-01'"),
    ("noid.csv", "user_id,item_id,timestamp\na,x,1\n,y,2\n", 2, "user_id",
     "empty"),
    ("weight.csv", "user_id,item_id,timestamp,w\na,x,1,4\na,y,2,high\n", 2,
     "w", "'high'"),
    ("utf8.csv", b"user_id,item_id,timestamp\na,x,1\nb,\xff\xfe,2\n", 2,
     "item_id", "UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize("name, content, row, column, needle", BAD_LOGS)
def test_validation_errors_name_file_row_column(
    write_text, name, content, row, column, needle
):
    path = write_text(name, content)
    with pytest.raises(DataError) as error:
        load(
            str(path), columns=ColumnMap(weight="w" if column == "w" else None)
        )
    message = str(error.value)
    assert name in message
    assert needle in message
    assert error.value.row == row
    if row is not None:
        assert f"row {row}" in message and "header" in message
    if column is not None:
        assert f"'{column}'" in message


def test_missing_column_lists_found_columns(write_text):
    path = write_text("log.csv", "uid,iid,ts\na,x,1\n")
    with pytest.raises(DataError) as error:
        load(str(path))
    assert "columns found: uid, iid, ts" in str(error.value)
    assert "--user-col" in str(error.value)


def test_duplicate_item_ids(write_text):
    log = write_text("log.csv", LOG)
    items = write_text("items.csv", "item_id,title\n01,A\n02,B\n01,C\n")
    with pytest.raises(DataError) as error:
        load(str(log), items=str(items))
    assert "items.csv" in str(error.value)
    assert error.value.row == 3 and error.value.column == "item_id"


def test_invalid_utf8_in_json_lines(write_text):
    path = write_text("log.jsonl", b'{"user_id": "a\xff", "item_id": "x"}\n')
    with pytest.raises(DataError, match="UTF-8") as error:
        load(str(path), columns=ColumnMap(time=None))
    assert error.value.row == 1 and error.value.column == "user_id"


def test_other_column_names_through_flags(write_text, tmp_path):
    write_text(
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,11,3.0,9\n",
    )
    write_text(
        "movies.csv",
        "movieId,title,genres\n10,Ten,Comedy|Drama\n11,Eleven,Horror\n",
    )
    args = _parse([
        "--interactions", str(tmp_path / "ratings.csv"),
        "--items", str(tmp_path / "movies.csv"),
        "--user-col", "userId",
        "--item-col", "movieId",
        "--weight-col", "rating",
    ])  # fmt: skip
    loaded = load_from_args(args)
    assert loaded.interactions.column("item_id").to_pylist() == ["10", "11"]
    # 'title' and 'genres' are picked up by name.
    assert loaded.items.table.column("categories").to_pylist() == [
        ["Comedy", "Drama"],
        ["Horror"],
    ]
    assert loaded.items.table.column("title").to_pylist() == ["Ten", "Eleven"]


def test_time_col_none_flag():
    columns = columns_from_args(
        _parse(["--interactions", "x", "--time-col", "none"])
    )
    assert columns.time is None


def test_ml100k_through_flags(ml100k):
    args = _parse([
        "--interactions", str(ml100k / "interactions.csv"),
        "--weight-col", "rating",
        "--items", str(ml100k / "items.csv"),
        "--item-text-col", "title",
        "--item-category-col", "genres",
        "--item-numeric-cols", "year",
        "--users", str(ml100k / "users.csv"),
    ])  # fmt: skip
    loaded = load_from_args(args)
    table = loaded.interactions
    assert table.num_rows == 100_000
    assert len(set(table.column("user_id").to_pylist())) == 943
    assert len(set(table.column("item_id").to_pylist())) == 1682
    assert loaded.items.table.num_rows == 1682
    assert loaded.users.table.num_rows == 943
    assert loaded.report.unknown_items == 0


def test_inspect_cli_bad_input_exits_2_with_one_line(write_text, repo_root):
    path = write_text("log.csv", "user_id,item_id,timestamp\na,x,later\n")
    result = subprocess.run(
        [sys.executable, "-m", "data.inspect", "--interactions", str(path)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "row 1" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name, content, row, column, needle", BAD_LOGS)
def test_every_validation_error_is_one_line_exit_2_on_the_cli(
    write_text, repo_root, name, content, row, column, needle
):
    path = write_text(name, content)
    weight = ["--weight-col", "w"] if column == "w" else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data.inspect",
            "--interactions",
            str(path),
            *weight,
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and name in lines[0]
    assert needle in lines[0]


def _parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_null_ids_in_parquet_name_the_row(tmp_path):
    path = _parquet(
        tmp_path / "log.parquet",
        user_id=["a", None, "c"],
        item_id=["x", "y", "z"],
        timestamp=[1, 2, 3],
    )
    with pytest.raises(DataError, match="id is empty") as error:
        load(str(path))
    assert error.value.row == 2 and error.value.column == "user_id"


def test_invalid_utf8_in_parquet_names_the_row(tmp_path):
    path = _parquet(
        tmp_path / "log.parquet",
        user_id=pa.array([b"a", b"b", b"\xff"], pa.binary()),
        item_id=["x", "y", "z"],
        timestamp=[1, 2, 3],
    )
    with pytest.raises(DataError, match="UTF-8") as error:
        load(str(path))
    assert error.value.row == 3 and error.value.column == "user_id"


def test_damaged_parquet_is_a_data_error(tmp_path):
    good = _parquet(
        tmp_path / "good.parquet",
        user_id=["a"] * 100,
        item_id=["x"] * 100,
        timestamp=list(range(100)),
    )
    damaged = tmp_path / "log.parquet"
    damaged.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(DataError, match="Parquet") as error:
        load(str(damaged))
    assert "log.parquet" in str(error.value)


@pytest.mark.parametrize("name", ["log.csv.gz", "log.jsonl.gz"])
def test_damaged_gzip_is_a_data_error(write_text, tmp_path, name):
    # a truncated stream, and one that is not gzip at all
    good = write_text(name, "user_id,item_id,timestamp\n" + "a,x,1\n" * 500)
    truncated = tmp_path / f"cut-{name}"
    truncated.write_bytes(good.read_bytes()[:40])
    garbage = tmp_path / f"junk-{name}"
    garbage.write_bytes(b"this is not gzip at all\n")
    for path in (truncated, garbage):
        with pytest.raises(DataError, match="cannot read") as error:
            load(str(path))
        assert path.name in str(error.value)


def test_nested_json_values_are_a_data_error(write_text):
    path = write_text(
        "log.jsonl",
        '{"user_id": {"id": 1}, "item_id": "x", "timestamp": 1}\n',
    )
    with pytest.raises(DataError, match="nested values") as error:
        load(str(path))
    assert error.value.column == "user_id"


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_json_lines_file_says_empty(write_text, content):
    path = write_text("log.jsonl", content)
    with pytest.raises(DataError, match="file is empty") as error:
        load(str(path))
    assert "log.jsonl" in str(error.value)


def test_inspect_cli_summary(write_text, repo_root):
    path = write_text("log.csv", LOG)
    result = subprocess.run(
        [sys.executable, "-m", "data.inspect", "--interactions", str(path)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "interactions        2" in result.stdout


def test_ragged_csv_names_the_line(write_text):
    path = write_text("log.csv", "user_id,item_id,timestamp\na,x,1\nb,y,2,9\n")
    with pytest.raises(DataError) as error:
        load(str(path))
    assert "log.csv" in str(error.value) and "line 3" in str(error.value)
