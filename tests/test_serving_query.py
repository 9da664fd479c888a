"""`python -m serving.query`: table, JSON, users file and errors."""

import json
import subprocess
import sys

import pytest

from serving import query
from tests import export_fixtures
from tests.conftest import subprocess_env

recommender = export_fixtures.recommender
serving_export = export_fixtures.serving_export


def _user(recommender) -> str:
    batch = recommender.recommend_batch([str(u) for u in range(1, 50)], 1)
    return next(b.user_id for b in batch if b.known)


def test_table(serving_export, recommender, capsys):
    user = _user(recommender)
    code = query.main(
        ["--model", str(serving_export.export_dir), "--user", user, "--k", "4"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == f"user {user} (model version 1, score isotonic)"
    assert out[1].split() == ["rank", "item_id", "title", "score", "similarity"]
    expected = recommender.recommend(user, k=4)
    assert len(out) == 2 + 4
    for line, r in zip(out[2:], expected.items, strict=True):
        cells = line.split()
        assert cells[1] == r.item_id
        assert cells[-2] == f"{r.score:.3f}"


@pytest.mark.parametrize("mode", ["--user", "--history", "--similar"])
def test_json(serving_export, recommender, capsys, mode):
    value = _user(recommender) if mode == "--user" else "1,2,3"
    if mode == "--similar":
        value = recommender.catalogue.item_ids[0]
    code = query.main(
        [
            "--model",
            str(serving_export.export_dir),
            mode,
            value,
            "--k",
            "3",
            "--format",
            "json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["model_version"] == 1
    assert len(result["items"]) == 3
    assert set(result["items"][0]) == {
        "item_id",
        "similarity",
        "score",
        "metadata",
    }


def test_users_file(serving_export, recommender, tmp_path, capsys):
    known = [
        b.user_id
        for b in recommender.recommend_batch([str(u) for u in range(1, 40)], 1)
        if b.known
    ][:30]
    users = tmp_path / "users.txt"
    users.write_text(
        "user_id\n" + "\n".join(known[:15] + ["ghost"] + known[15:])
    )
    output = tmp_path / "out" / "recs.jsonl"
    code = query.main(
        [
            "--model",
            str(serving_export.export_dir),
            "--users-file",
            str(users),
            "--output",
            str(output),
            "--k",
            "5",
            "--batch-size",
            "8",
        ]
    )
    assert code == 0
    assert "1 of 31 users unknown" in capsys.readouterr().err
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["user_id"] for line in lines] == known[:15] + [
        "ghost"
    ] + known[15:]
    assert lines[15] == {
        "user_id": "ghost",
        "items": [],
        "error": "unknown user",
    }
    first = recommender.recommend(known[0], k=5)
    assert [i["item_id"] for i in lines[0]["items"]] == first.item_ids
    assert set(lines[0]["items"][0]) == {"item_id", "score", "similarity"}
    assert list(output.parent.iterdir()) == [output]  # no temp file left

    # --include-seen may return seen items
    code = query.main(
        [
            "--model",
            str(serving_export.export_dir),
            "--users-file",
            str(users),
            "--output",
            str(output),
            "--include-seen",
        ]
    )
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    everything = recommender.recommend(known[0], k=10, exclude_seen=False)
    assert [i["item_id"] for i in lines[0]["items"]] == everything.item_ids


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--user", "no-such-user"],
            "error: user_id 'no-such-user' is unknown",
        ),
        (["--similar", "1", "--k", "0"], "error: k must be in 1..100"),
        (["--user", "1", "--filters", "{"], "error: --filters is not valid"),
        (
            ["--users-file", "/nonexistent"],
            "error: --users-file needs --output",
        ),
    ],
)
def test_errors_in_process(serving_export, capsys, args, message):
    code = query.main(["--model", str(serving_export.export_dir), *args])
    assert code == 2
    assert capsys.readouterr().err.startswith(message)


def test_error_is_one_line_without_traceback(tmp_path):
    # A missing export fails before TensorFlow loads, keeping this fast;
    # the other errors take the same path (test_errors_in_process).
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.query",
            "--model",
            str(tmp_path / "missing"),
            "--user",
            "1",
        ],
        cwd=export_fixtures.REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: export directory {tmp_path / 'missing'} does not exist; "
        "pass the --output directory of `python -m training.export`"
    ]


def test_missing_export_directory(tmp_path, capsys):
    code = query.main(["--model", str(tmp_path / "nope"), "--user", "1"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
