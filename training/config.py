"""Typed run configuration, read from TOML and overridable from the CLI.

A configuration file holds any subset of the sections below; every field
can also be set with ``--set section.field=value``. The resolved
configuration is written into the run directory so that a run can be
resumed, exported and reproduced.

Example file::

    [model]
    embedding_dim = 64

    [train]
    epochs = 20
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tomllib
import types
import typing


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


@dataclasses.dataclass
class DataConfig:
    """How the log is split and fed.

    Attributes:
      split: ``temporal``, ``random``, ``time`` or ``none``.
      test_fraction: Share of each user's rows held out for testing.
      validation_fraction: Share of the training rows held out for early
        stopping.
      min_interactions: Users with fewer rows stay wholly in training.
      time_cutoff: Unix seconds of the ``time`` split; 0 picks the quantile.
    """

    split: str = "temporal"
    test_fraction: float = 0.2
    validation_fraction: float = 0.2
    min_interactions: int = 5
    time_cutoff: int = 0


@dataclasses.dataclass
class ModelConfig:
    """Shape of the two towers and of the retrieval loss.

    Attributes:
      embedding_dim: Width of id, token and category embeddings.
      output_dim: Width of the final, L2-normalised embeddings.
      hidden_units: Hidden layer widths of each tower's MLP.
      history_length: Most recent items pooled by the query tower.
      history_mode: Training history of an example: ``before`` (items
        before it in time) or ``all`` (the user's other training items).
      history_dropout: Share of history items dropped per example while
        training; a strong regulariser for history pooling.
      share_item_embeddings: History and candidates share the item table.
      history_features: History items also carry their title and category
        embeddings (shared with the candidate tower).
      use_user_id: Adds a user-id embedding to the query tower.
      use_user_features: Uses the user table's features when present.
      use_item_features: Uses the item table's features when present.
      candidate_id_dropout: Share of candidates whose id embedding is
        hidden while training, so features alone place cold items well.
      temperature: Softmax temperature of the in-batch loss.
      logq_correction: Subtracts log sampling probability from the logits.
      remove_accidental_hits: Masks in-batch negatives equal to the
        positive.
    """

    embedding_dim: int = 64
    output_dim: int = 64
    hidden_units: list[int] = dataclasses.field(default_factory=lambda: [128])
    history_length: int = 50
    history_mode: str = "before"
    history_dropout: float = 0.5
    share_item_embeddings: bool = True
    history_features: bool = True
    use_user_id: bool = False
    use_user_features: bool = True
    use_item_features: bool = True
    candidate_id_dropout: float = 0.1
    temperature: float = 0.05
    logq_correction: bool = True
    remove_accidental_hits: bool = True


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and stopping.

    Attributes:
      epochs: Upper bound on epochs.
      batch_size: Examples per step (and in-batch negatives).
      learning_rate: Adam learning rate.
      patience: Epochs without a better validation metric before stopping.
      monitor: Validation metric of early stopping.
      seed: Seeds TensorFlow, NumPy and the data order.
      eval_batch_size: Users per batch in evaluation.
      refit: After early stopping, retrain from scratch on training plus
        validation for the best number of epochs (what the baselines see).
      calibration_fraction: Share of the users with validation
        interactions whose validation part the refit leaves out: the
        displayed score is calibrated on them, with the model that is
        exported, on interactions it never trained on.
    """

    epochs: int = 30
    batch_size: int = 1024
    learning_rate: float = 0.002
    patience: int = 3
    monitor: str = "recall@10"
    seed: int = 0
    eval_batch_size: int = 512
    refit: bool = True
    calibration_fraction: float = 0.1


@dataclasses.dataclass
class EvalConfig:
    """Baselines beside the model.

    Attributes:
      baselines: Names among ``popularity``, ``item_knn``, ``ease``.
      ease_lambda: L2 strength of EASE.
      max_dense_items: Item-kNN and EASE need a dense item-item matrix;
        above this catalogue size they are skipped.
    """

    baselines: list[str] = dataclasses.field(
        default_factory=lambda: ["popularity", "item_knn", "ease"]
    )
    ease_lambda: float = 200.0
    max_dense_items: int = 20000


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value, hint, key: str):
    """Checks (and for CLI strings, parses) `value` against a type hint."""
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        (inner,) = set(typing.get_args(hint)) or {str}
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' expects a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, args[0], key)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no"):
            return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' expects true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' expects an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"'{key}' expects an integer, got {value!r}"
            ) from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"'{key}' expects a number, got {value!r}"
            ) from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' expects a string, got {value!r}")
        return value
    raise ConfigError(f"'{key}' has an unsupported type {hint}")


def _section(config: Config, name: str):
    if name not in {f.name for f in dataclasses.fields(Config)}:
        sections = ", ".join(f.name for f in dataclasses.fields(Config))
        raise ConfigError(
            f"unknown configuration section '{name}'; sections are {sections}"
        )
    return getattr(config, name)


def _set(config: Config, key: str, value) -> None:
    section_name, _, field_name = key.partition(".")
    if not field_name:
        raise ConfigError(
            f"configuration key '{key}' must look like section.field, "
            "e.g. train.epochs"
        )
    section = _section(config, section_name)
    hints = typing.get_type_hints(type(section))
    if field_name not in hints:
        known = ", ".join(f"{section_name}.{k}" for k in hints)
        raise ConfigError(
            f"unknown configuration key '{key}'; known keys: {known}"
        )
    setattr(section, field_name, _coerce(value, hints[field_name], key))


def validate(config: Config) -> Config:
    """Checks values whose type is right but whose meaning is not."""
    from data.pipeline import HISTORY_MODES
    from data.split import METHODS

    checks = [
        (config.data.split in METHODS, "data.split", f"one of {METHODS}"),
        (
            config.model.history_mode in HISTORY_MODES,
            "model.history_mode",
            f"one of {HISTORY_MODES}",
        ),
        (0 < config.data.test_fraction < 1, "data.test_fraction", "in (0, 1)"),
        (
            0 < config.data.validation_fraction < 1,
            "data.validation_fraction",
            "in (0, 1)",
        ),
        (config.model.embedding_dim > 0, "model.embedding_dim", "positive"),
        (config.model.output_dim > 0, "model.output_dim", "positive"),
        (config.model.history_length > 0, "model.history_length", "positive"),
        (
            0 <= config.model.history_dropout < 1,
            "model.history_dropout",
            "in [0, 1)",
        ),
        (
            0 <= config.model.candidate_id_dropout < 1,
            "model.candidate_id_dropout",
            "in [0, 1)",
        ),
        (config.model.temperature > 0, "model.temperature", "positive"),
        (config.train.epochs > 0, "train.epochs", "positive"),
        (config.train.batch_size > 1, "train.batch_size", "at least 2"),
        (config.train.learning_rate > 0, "train.learning_rate", "positive"),
        (config.train.patience > 0, "train.patience", "positive"),
        (
            0 <= config.train.calibration_fraction < 1,
            "train.calibration_fraction",
            "in [0, 1)",
        ),
        (
            config.train.monitor
            in ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10"),
            "train.monitor",
            "recall@10, recall@20, ndcg@10, ndcg@20 or mrr@10",
        ),
        (
            set(config.eval.baselines) <= {"popularity", "item_knn", "ease"},
            "eval.baselines",
            "a list of popularity, item_knn, ease",
        ),
    ]
    for ok, key, expected in checks:
        if not ok:
            value = _get(config, key)
            raise ConfigError(f"'{key}' must be {expected}, got {value!r}")
    return config


def _get(config: Config, key: str):
    section, field = key.split(".")
    return getattr(getattr(config, section), field)


def load_config(path: str | pathlib.Path | None = None, overrides=()) -> Config:
    """Builds a config from defaults, a TOML file, then ``key=value`` items.

    Args:
      path: Optional TOML file with ``[data]``, ``[model]``, ``[train]``,
        ``[eval]`` sections.
      overrides: Strings ``section.field=value``, applied in order.

    Raises:
      ConfigError: Naming the file and key for an unknown key, a wrong type
        or an invalid value.
    """
    config = Config()
    if path is not None:
        path = pathlib.Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        try:
            for section_name, section in raw.items():
                if not isinstance(section, dict):
                    raise ConfigError(
                        f"'{section_name}' must be a [section] table"
                    )
                _section(config, section_name)
                for key, value in section.items():
                    _set(config, f"{section_name}.{key}", value)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--set expects section.field=value, got '{item}'"
            )
        _set(config, key.strip(), value.strip())
    return validate(config)


def to_toml(config: Config) -> str:
    """Renders a config as TOML (which `load_config` reads back)."""
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def save_config(config: Config, path: str | pathlib.Path) -> None:
    pathlib.Path(path).write_text(to_toml(config))
