"""Typed configuration: TOML, --set overrides, errors that name the key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from training.config import (
    Config,
    ConfigError,
    load_config,
    save_config,
    to_toml,
)


def test_defaults_without_a_file():
    config = load_config()

    assert config == Config()
    assert config.data.split == "temporal"
    assert config.model.temperature == 0.05


def test_file_then_overrides_in_order(write_text):
    path = write_text(
        "run.toml",
        "[model]\nembedding_dim = 16\nhidden_units = [32, 8]\n"
        "[train]\nepochs = 4\nlearning_rate = 0.01\n",
    )

    config = load_config(
        path,
        [
            "train.epochs=7",
            "model.hidden_units=64,16",
            "model.logq_correction=false",
            "train.epochs=9",
            "eval.baselines=popularity",
        ],
    )

    assert config.model.embedding_dim == 16  # from the file
    assert config.train.learning_rate == 0.01  # from the file
    assert config.train.epochs == 9  # the last override wins
    assert config.model.hidden_units == [64, 16]
    assert config.model.logq_correction is False
    assert config.eval.baselines == ["popularity"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs=3", 3),
        ("train.epochs = 3 ", 3),
        ("train.learning_rate=1e-3", 0.001),
        ("model.remove_accidental_hits=no", False),
        ("model.remove_accidental_hits=TRUE", True),
        ("model.hidden_units=", []),
        ("data.split=none", "none"),
    ],
)
def test_override_values_are_parsed_by_type(override, expected):
    key = override.split("=")[0].strip()
    section, field = key.split(".")

    config = load_config(overrides=[override])

    assert getattr(getattr(config, section), field) == expected


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown configuration key 'train.epoch'"),
        ("training.epochs=3", "unknown configuration section 'training'"),
        ("epochs=3", "'epochs' must look like section.field"),
        ("train.epochs", "--set expects section.field=value"),
        ("train.epochs=many", "'train.epochs' expects an integer"),
        ("train.epochs=2.5", "'train.epochs' expects an integer"),
        ("train.learning_rate=fast", "'train.learning_rate' expects a number"),
        ("model.logq_correction=maybe", "'model.logq_correction' expects"),
        ("model.hidden_units=64,wide", "'model.hidden_units' expects an int"),
        ("data.split=later", "'data.split' must be one of"),
        ("train.epochs=0", "'train.epochs' must be positive"),
        ("train.batch_size=1", "'train.batch_size' must be at least 2"),
        ("model.history_dropout=1", "'model.history_dropout' must be in"),
        ("train.monitor=auc", "'train.monitor' must be recall@10"),
        ("eval.baselines=random", "'eval.baselines' must be a list"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    "content, message",
    [
        ("[train]\nepochz = 3\n", "unknown configuration key 'train.epochz'"),
        ("[train]\nepochs = 'ten'\n", "'train.epochs' expects an integer"),
        ("[train]\nepochs = true\n", "'train.epochs' expects an integer"),
        ("[model]\nhidden_units = 64\n", "'model.hidden_units' expects a"),
        ("[model]\nhistory_mode = 3\n", "'model.history_mode' expects a s"),
        ("epochs = 3\n", "'epochs' must be a \\[section\\] table"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_key(write_text, content, message):
    path = write_text("bad.toml", content)

    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)

    assert str(error.value).startswith(str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")


def test_saved_config_loads_back_in_a_fresh_process(tmp_path, repo_root):
    config = load_config(
        overrides=[
            "model.hidden_units=32,16",
            "model.history_mode=all",
            "model.temperature=0.2",
            "train.epochs=2",
            "eval.baselines=popularity,ease",
            "data.time_cutoff=1700000000",
        ]
    )
    path = tmp_path / "config.toml"
    save_config(config, path)

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys\n"
            "from training.config import load_config\n"
            "print(json.dumps(load_config(sys.argv[1]).to_dict()))\n",
            str(path),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(repo_root), "PATH": ""},
    )

    assert json.loads(out.stdout) == config.to_dict()
    assert to_toml(load_config(path)) == to_toml(config)


def _train_cli(repo_root, *args):
    return subprocess.run(
        [sys.executable, "-m", "training.train", *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env={
            "PYTHONPATH": str(repo_root),
            "PATH": "",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        },
        timeout=120,
    )


@pytest.fixture
def tiny_log(write_text):
    rows = "".join(f"u{u},i{i},{u * 10 + i}\n" for u in range(3) for i in (5,))
    return write_text("log.csv", "user_id,item_id,timestamp\n" + rows)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--set", "train.epoch=3"], "train.epoch"),
        (["--set", "train.epochs=many"], "train.epochs"),
        (["--set", "model.temperature=-1"], "model.temperature"),
        (["--epochs", "0"], "train.epochs"),
        (["--set", "train.patience=2", "train.epoch=3"], "train.epoch"),
        (
            ["--set", "train.calibration_fraction=1"],
            "train.calibration_fraction",
        ),
        (["--user-col", "member"], "member"),
        (["--time-col", "when"], "when"),
    ],
)
def test_cli_reports_bad_configuration_in_one_line(
    repo_root, tiny_log, tmp_path, args, named
):
    proc = _train_cli(
        repo_root,
        "--interactions",
        str(tiny_log),
        "--output",
        str(tmp_path / "run"),
        *args,
    )

    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert f"'{named}'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_committed_default_config_matches_the_dataclass(repo_root):
    from training.config import Config, load_config

    assert load_config(repo_root / "configs" / "default.toml") == Config()


def test_one_set_flag_takes_several_pairs_and_stays_out_of_data_flags():
    from training import train

    argv = [
        "--interactions", "log.csv",
        "--set", "train.patience=2", "model.temperature=0.1",
        "--set=train.seed=3",
        "--user-col", "uid",
        "--output", "run",
    ]  # fmt: skip

    args = train.parse_args(argv)

    assert args.set == [
        "train.patience=2",
        "model.temperature=0.1",
        "train.seed=3",
    ]
    assert train._data_argv(argv) == [
        "--interactions",
        "log.csv",
        "--user-col",
        "uid",
    ]
