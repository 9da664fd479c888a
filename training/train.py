"""Trains the two-tower model, evaluates it beside baselines, reports.

    python -m training.train --interactions logs.csv --items items.csv \
        --user-col user_id --item-col item_id --time-col timestamp \
        --item-text-col title --item-category-col genres \
        --output runs/first

Writes into the run directory: the resolved ``config.toml``, the encoder,
a checkpoint per epoch (``--resume`` continues from the latest), the best
weights by validation recall, ``metrics.jsonl``, TensorBoard logs,
``results.json`` and ``report.md`` with plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import pathlib
import sys
import time

import numpy as np
import pyarrow as pa

from data import cli as data_cli
from data.pipeline import Sequences, build_sequences, make_dataset
from data.schema import DataError, LoadedData
from data.split import Split, split_interactions
from data.vocab import Encoder
from training import config as config_lib

log = logging.getLogger("training.train")


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, unusable run directory)."""


@dataclasses.dataclass
class Prepared:
    """Everything the loop and the evaluation need, in code space."""

    split: Split
    encoder: Encoder
    sequences: Sequences
    examples: object
    full_sequences: Sequences
    full_examples: object
    item_probability: np.ndarray


def prepare(data: LoadedData, config: config_lib.Config) -> Prepared:
    """Splits the log, builds vocabularies and per-user sequences."""
    from training.model import sampling_probabilities

    cfg = config.data
    split = split_interactions(
        data.interactions,
        cfg.split,
        seed=config.train.seed,
        test_fraction=cfg.test_fraction,
        validation_fraction=cfg.validation_fraction,
        min_interactions=cfg.min_interactions,
        cutoff=cfg.time_cutoff or None,
    )
    if split.train.num_rows == 0:
        raise DataError("the training split is empty; the log is too small")
    encoder = Encoder(split.train, data.items, data.users)
    sequences, examples = build_sequences(split.train, encoder)

    # the "training part" of the protocol: histories for the test queries
    training_part = pa.concat_tables([split.train, split.validation])
    full_sequences, full_examples = build_sequences(training_part, encoder)
    probability = sampling_probabilities(examples.item, encoder.num_items)
    log.info(
        "split %s: %s; %d users, %d items (%d seen in training)",
        split.method,
        split.sizes(),
        encoder.num_users,
        encoder.num_items,
        encoder.num_trained_items,
    )
    return Prepared(
        split,
        encoder,
        sequences,
        examples,
        full_sequences,
        full_examples,
        probability,
    )


@dataclasses.dataclass
class RefitData:
    """What the refit trains on, and the split encoded to match.

    Attributes:
      prepared: The split re-encoded with the refit's vocabulary; its
        item_probability comes from the refit rows.
      rows: Training plus validation, less the calibration users'
        validation part.
      sequences: `rows` as per-user sequences (the refit's training data).
      examples: The training examples of `sequences`.
    """

    prepared: Prepared
    rows: pa.Table
    sequences: Sequences
    examples: object


def prepare_refit(
    data: LoadedData, prep: Prepared, kept_back: list[str]
) -> RefitData:
    """The same split, encoded with vocabularies of what the refit trains on.

    The refit trains on training plus validation, less the validation part
    of the calibration users, and the test stage of the protocol ranks
    every item of that training part: items first seen in the validation
    slice get trained codes (and id embeddings) here, which the
    early-stopping phase's vocabulary (training split only) does not give
    them. An item seen only in the kept-back rows stays cold.

    Args:
      data: The loaded log and side tables.
      prep: The early-stopping phase's preparation.
      kept_back: User ids whose validation part the refit leaves out.

    Returns:
      The refit rows and sequences, and the split encoded to match.
    """
    import pyarrow.compute as pc

    from training.model import sampling_probabilities

    validation = prep.split.validation
    if kept_back:
        validation = validation.filter(
            pc.invert(
                pc.is_in(
                    validation["user_id"],
                    value_set=pa.array(kept_back, pa.string()),
                )
            )
        )
    rows = pa.concat_tables([prep.split.train, validation])
    encoder = Encoder(rows, data.items, data.users)
    sequences, examples = build_sequences(prep.split.train, encoder)
    training_part = pa.concat_tables([prep.split.train, prep.split.validation])
    full_sequences, full_examples = build_sequences(training_part, encoder)
    refit_sequences, refit_examples = build_sequences(rows, encoder)
    log.info(
        "refit vocabulary: %d items seen in training plus validation (%d "
        "in training alone)",
        encoder.num_trained_items,
        prep.encoder.num_trained_items,
    )
    prepared = Prepared(
        prep.split,
        encoder,
        sequences,
        examples,
        full_sequences,
        full_examples,
        sampling_probabilities(refit_examples.item, encoder.num_items),
    )
    return RefitData(prepared, rows, refit_sequences, refit_examples)


def build_model(
    config: config_lib.Config,
    encoder: Encoder,
    sequences: Sequences,
    examples,
    item_probability: np.ndarray,
):
    """A compiled model and its shuffled training dataset.

    Returns:
      (model, dataset); the model's optimizer is ``model.optimizer``.
    """
    import tensorflow as tf

    from training.model import TwoTowerModel

    model = TwoTowerModel(config.model, encoder, item_probability)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(config.train.learning_rate)
    )
    dataset = make_dataset(
        sequences,
        examples,
        history_length=config.model.history_length,
        batch_size=config.train.batch_size,
        history_mode=config.model.history_mode,
        seed=config.train.seed,
    )
    return model, dataset


def model_scores(model, encoder, sequences, history_length: int):
    """A score function over the trained items for `training.metrics`."""
    codes = np.arange(1, encoder.num_trained_items + 1)
    candidates = model.candidate_embeddings(codes)

    def score_fn(user_codes: np.ndarray) -> np.ndarray:
        histories = sequences.padded(user_codes, history_length)
        queries = model.query_embeddings(user_codes, histories)
        return queries @ candidates.T

    return score_fn


def evaluate_model(model, prep: Prepared, config, *, final: bool):
    """Evaluates on validation (during training) or test (at the end)."""
    from training import metrics

    split = prep.split
    if final and split.test.num_rows:
        seen_table = pa.concat_tables([split.train, split.validation])
        heldout_table = split.test
        sequences = prep.full_sequences
    else:
        seen_table, heldout_table = split.train, split.validation
        sequences = prep.sequences
    seen = metrics.interactions_matrix(seen_table, prep.encoder)
    heldout = metrics.interactions_matrix(heldout_table, prep.encoder)
    score_fn = model_scores(
        model, prep.encoder, sequences, config.model.history_length
    )
    result = metrics.evaluate(
        score_fn,
        seen.matrix,
        heldout.matrix,
        batch_size=config.train.eval_batch_size,
        heldout_counts=heldout.counts,
    )
    return result, seen, heldout


class RunDir:
    """Paths inside a run directory."""

    def __init__(self, root: str | pathlib.Path):
        self.root = pathlib.Path(root)
        self.config = self.root / "config.toml"
        self.data_args = self.root / "data_args.json"
        self.encoder = self.root / "encoder"
        self.checkpoints = self.root / "checkpoints"
        self.best = self.root / "best"
        self.final = self.root / "final"
        self.state = self.root / "state.json"
        self.metrics = self.root / "metrics.jsonl"
        self.tensorboard = self.root / "tensorboard"
        self.results = self.root / "results.json"
        self.histories = self.root / "histories.npz"
        self.calibration = self.root / "calibration.npz"
        self.report = self.root / "report.md"


def _write_json(path: pathlib.Path, value) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=float))
    tmp.replace(path)


def _calibration_users(prep: Prepared, config) -> np.ndarray:
    """User codes whose validation part calibrates the refit model.

    A seeded share (train.calibration_fraction) of the users with
    validation interactions; the refit leaves their validation part out.
    """
    from training import metrics

    heldout = metrics.interactions_matrix(prep.split.validation, prep.encoder)
    seen = metrics.interactions_matrix(prep.split.train, prep.encoder)
    # users with a training history, so that their query means something
    users = np.flatnonzero(
        (np.diff(heldout.matrix.indptr) > 0) & (np.diff(seen.matrix.indptr) > 0)
    )
    users = users[users > 0]
    fraction = config.train.calibration_fraction
    if fraction == 0 or len(users) == 0:
        return np.zeros(0, np.int64)
    count = min(len(users), max(1, round(fraction * len(users))))
    rng = np.random.default_rng(config.train.seed)
    return np.sort(rng.choice(users, count, replace=False))


def _calibration_pairs(
    model, prep: Prepared, config, users: np.ndarray | None, top: int = 100
):
    """(similarity, label, user) of validation users' top candidates.

    The label says whether the user went on to interact with the item in
    the validation slice; export fits the displayed score on these. The
    model must not have trained on those users' validation interactions.

    Args:
      model: The model that will be exported.
      prep: The prepared split.
      config: The run's config.
      users: User codes to calibrate on; None takes every user with
        validation interactions.
      top: Candidates per user (the served top-k lies within them).
    """
    from training import metrics

    seen = metrics.interactions_matrix(prep.split.train, prep.encoder)
    heldout = metrics.interactions_matrix(prep.split.validation, prep.encoder)
    if users is None:
        users = np.flatnonzero(np.diff(heldout.matrix.indptr) > 0)
    if len(users) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int8), users
    score_fn = model_scores(
        model, prep.encoder, prep.sequences, config.model.history_length
    )
    k = min(top, prep.encoder.num_trained_items)
    sims, labels, owners = [], [], []
    for i in range(0, len(users), config.train.eval_batch_size):
        batch = users[i : i + config.train.eval_batch_size]
        scores = score_fn(batch)
        scores[seen.matrix[batch].toarray() > 0] = -np.inf
        idx, best = metrics.top_k(scores, k)
        truth = heldout.matrix[batch].toarray() > 0
        hit = np.take_along_axis(truth, idx, axis=1)
        finite = np.isfinite(best)
        sims.append(best[finite])
        labels.append(hit[finite])
        owners.append(np.broadcast_to(batch[:, None], best.shape)[finite])
    return (
        np.concatenate(sims).astype(np.float32),
        np.concatenate(labels).astype(np.int8),
        np.concatenate(owners).astype(np.int64),
    )


def train(
    data: LoadedData,
    config: config_lib.Config,
    run_dir: str | pathlib.Path,
    *,
    resume: bool = False,
    data_args: dict | None = None,
    verbose: int | None = None,
) -> dict:
    """Runs training, evaluation and the report into `run_dir`.

    Args:
      data: The loaded interactions and side tables.
      config: The resolved configuration.
      run_dir: Output directory; it must be new or empty unless `resume`.
      resume: Continue from the latest checkpoint in `run_dir`.
      data_args: The data flags, saved so export and resume can reload.
      verbose: Keras progress (1 bar, 2 a line per epoch); default by tty.

    Returns:
      The content of ``results.json``.

    Raises:
      TrainingError: On NaN loss or a run directory that cannot be used.
    """
    import tensorflow as tf

    from training import baselines as baselines_lib
    from training import metrics
    from training.report import write_report

    paths = RunDir(run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    if not resume:
        config_lib.save_config(config, paths.config)
        _write_json(paths.data_args, data_args or {})
    tf.keras.utils.set_random_seed(config.train.seed)

    prep = prepare(data, config)
    prep.encoder.save(paths.encoder)
    if data.items is not None:
        # export shows titles and categories next to recommendations
        import pyarrow.parquet as pq

        pq.write_table(data.items.table, paths.root / "items.parquet")
    model, dataset = build_model(
        config,
        prep.encoder,
        prep.sequences,
        prep.examples,
        prep.item_probability,
    )
    optimizer = model.optimizer

    # build the variables and the optimizer slots (without a training
    # step) so that a checkpoint can be restored into them
    model.compute_loss(next(iter(dataset.take(1))))
    optimizer.build(model.trainable_variables)
    epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, epoch=epoch
    )
    manager = tf.train.CheckpointManager(
        checkpoint, paths.checkpoints, max_to_keep=2
    )
    state = {"history": [], "best": None, "best_epoch": 0, "bad_epochs": 0}
    if resume and paths.state.exists():
        saved_state = json.loads(paths.state.read_text())
        # the checkpoint of the last epoch state.json records: a run killed
        # between saving a checkpoint and writing state.json goes back one
        done = len(saved_state["history"])
        matching = [
            p for p in manager.checkpoints if p.endswith(f"ckpt-{done}")
        ]
        if matching:
            checkpoint.restore(matching[-1]).expect_partial()
            state = saved_state
            log.info("resumed from %s (epoch %d)", matching[-1], done)
    if resume and state["best"] is None:
        log.warning(
            "%s: no finished epoch to resume from; training starts over",
            paths.root,
        )
    # metrics.jsonl repeats the restored history, so epochs that ran after
    # the restored checkpoint are neither lost nor listed twice
    paths.metrics.write_text(
        "".join(json.dumps(record) + "\n" for record in state["history"])
    )

    best_checkpoint = tf.train.Checkpoint(model=model)
    writer = tf.summary.create_file_writer(str(paths.tensorboard))
    monitor = config.train.monitor
    if verbose is None:
        verbose = 1 if sys.stderr.isatty() else 2
    stopped_early = False

    while int(epoch.numpy()) < config.train.epochs:
        current = int(epoch.numpy()) + 1
        if state["bad_epochs"] >= config.train.patience:
            stopped_early = True
            break
        start = time.perf_counter()
        tf.keras.utils.set_random_seed(config.train.seed + current)
        history = model.fit(
            dataset,
            epochs=1,
            verbose=verbose,
            callbacks=[tf.keras.callbacks.TerminateOnNaN()],
        )
        seconds = time.perf_counter() - start
        loss = float(history.history["loss"][-1])
        if not math.isfinite(loss):
            raise TrainingError(
                f"loss became {loss} in epoch {current}; lower "
                "train.learning_rate (e.g. --set train.learning_rate=0.0005)"
                f" or raise model.temperature. Best weights so far (epoch "
                f"{state['best_epoch']}) are in {paths.best}"
            )

        result, _, _ = evaluate_model(model, prep, config, final=False)
        value = result.metrics[monitor]
        record = {
            "epoch": current,
            "loss": loss,
            "seconds": round(seconds, 3),
            "examples_per_second": len(prep.examples) / seconds,
            **{f"val_{k}": v for k, v in result.metrics.items()},
        }
        improved = state["best"] is None or value > state["best"]
        if improved:
            state.update(best=value, best_epoch=current, bad_epochs=0)
            best_checkpoint.write(str(paths.best / "weights"))
        else:
            state["bad_epochs"] += 1
        state["history"].append(record)
        with paths.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        with writer.as_default(step=current):
            tf.summary.scalar("loss", record["loss"])
            for key, v in result.metrics.items():
                tf.summary.scalar(f"validation/{key}", v)
        writer.flush()
        log.info(
            "epoch %d: loss %.4f, validation %s %.4f%s (%.1fs)",
            current,
            record["loss"],
            monitor,
            value,
            " (best)" if improved else "",
            seconds,
        )
        epoch.assign(current)
        manager.save(checkpoint_number=current)
        _write_json(paths.state, state)

    if state["bad_epochs"] >= config.train.patience:
        stopped_early = True
    if stopped_early:
        log.info(
            "early stopping: no better validation %s for %d epochs",
            monitor,
            config.train.patience,
        )
    best_checkpoint.read(str(paths.best / "weights")).expect_partial()
    log.info("restored the best epoch (%d)", state["best_epoch"])

    refit = (
        config.train.refit
        and prep.split.validation.num_rows > 0
        and state["best_epoch"] > 0
    )
    # the displayed score is calibrated with the model that is exported,
    # on validation interactions it did not train on: the early-stopped
    # model never saw the validation slice; the refit leaves out that of
    # a share of the users
    calibration_users = None
    if refit:
        kept_back = prep.encoder.users.decode(_calibration_users(prep, config))
        refit_data = prepare_refit(data, prep, kept_back)
        prep = refit_data.prepared
        # export reads the refit model with this vocabulary
        prep.encoder.save(paths.encoder)
        calibration_users = prep.encoder.user_codes(
            pa.array(kept_back, pa.string())
        )
        model = _refit(refit_data, config, state["best_epoch"], verbose)
        tf.train.Checkpoint(model=model).write(str(paths.final / "weights"))
    sims, labels, owners = _calibration_pairs(
        model, prep, config, calibration_users
    )
    np.savez(paths.calibration, similarity=sims, label=labels, user=owners)

    # final evaluation of the model and the baselines on the same split
    final_result, seen, heldout = evaluate_model(
        model, prep, config, final=True
    )
    evaluated_on = "test" if prep.split.test.num_rows else "validation"
    results = {"model": final_result.metrics}
    curves = {"model": final_result.recall_curve}
    for name, baseline in baselines_lib.fit_baselines(
        seen.matrix,
        names=tuple(config.eval.baselines),
        max_dense_items=config.eval.max_dense_items,
        ease_lambda=config.eval.ease_lambda,
    ).items():
        r = metrics.evaluate(
            baseline.scores,
            seen.matrix,
            heldout.matrix,
            batch_size=config.train.eval_batch_size,
            heldout_counts=heldout.counts,
        )
        results[name] = r.metrics
        curves[name] = r.recall_curve

    # serving needs each user's whole training part and calibration data
    np.savez(
        paths.histories,
        items=prep.full_sequences.items,
        offsets=prep.full_sequences.offsets,
        item_probability=prep.item_probability,
    )

    notes = [
        f"Split: {prep.split.method}; evaluated on the {evaluated_on} set "
        f"({final_result.num_users} users), full ranking over the "
        f"{prep.encoder.num_trained_items} items of the training "
        f"{'part' if refit else 'split'} with seen items masked.",
        f"Best epoch {state['best_epoch']} of {len(state['history'])} by "
        f"validation {monitor}"
        + (" (stopped early)." if stopped_early else "."),
    ]
    if refit:
        notes.append(
            f"The reported model was retrained from scratch for "
            f"{state['best_epoch']} epochs on training plus validation "
            "(train.refit), the same data the baselines are fitted on, "
            f"less the validation part of {len(calibration_users)} users "
            "kept back to calibrate the displayed score."
        )
    for name in config.eval.baselines:
        if name not in results:
            notes.append(f"Baseline {name} skipped: catalogue too large.")
    summary = {
        "evaluated_on": evaluated_on,
        "best_epoch": state["best_epoch"],
        "epochs_run": len(state["history"]),
        "stopped_early": stopped_early,
        "refit": bool(refit),
        "calibration": {
            "model": "refit" if refit else "early-stopped",
            "users": int(len(np.unique(owners))),
            "pairs": int(len(sims)),
            "positives": int(labels.sum()),
        },
        "data": dataclasses.asdict(data.report),
        "split": prep.split.sizes(),
        "num_users": prep.encoder.num_users,
        "num_items": prep.encoder.num_items,
        "num_trained_items": prep.encoder.num_trained_items,
        "results": results,
    }
    np.savez(paths.root / "curves.npz", **curves)
    write_report(
        paths.root,
        model_name="two-tower",
        results=dict(results),
        curves=curves,
        history=state["history"],
        notes=notes,
    )
    _write_json(paths.results, summary)
    return summary


def _refit(refit: RefitData, config, epochs: int, verbose: int):
    """Trains a fresh model on the refit rows for `epochs` epochs.

    Args:
      refit: What `prepare_refit` made.
      config: The run's config.
      epochs: Epochs to train (the early-stopped run's best).
      verbose: Keras progress mode.
    """
    import tensorflow as tf

    prep = refit.prepared
    log.info(
        "refit: %d epochs on %d rows of training plus validation (%d "
        "validation rows kept back for calibration)",
        epochs,
        refit.rows.num_rows,
        prep.split.train.num_rows
        + prep.split.validation.num_rows
        - refit.rows.num_rows,
    )
    tf.keras.utils.set_random_seed(config.train.seed)
    model, dataset = build_model(
        config,
        prep.encoder,
        refit.sequences,
        refit.examples,
        prep.item_probability,
    )
    history = model.fit(
        dataset,
        epochs=epochs,
        verbose=verbose,
        callbacks=[tf.keras.callbacks.TerminateOnNaN()],
    )
    loss = float(history.history["loss"][-1])
    if not math.isfinite(loss):
        raise TrainingError(
            f"loss became {loss} while refitting; lower train.learning_rate"
            " or set train.refit=false"
        )
    return model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_cli.add_data_arguments(parser)
    parser.add_argument(
        "--split",
        choices=("temporal", "random", "time", "none"),
        help="split method (default: the config's, temporal)",
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs")
    parser.add_argument("--config", help="TOML file with config sections")
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set train.batch_size=512 "
        "model.temperature=0.1 (the flag may also be repeated)",
    )
    parser.add_argument(
        "--output", required=True, help="run directory to write"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output from its latest checkpoint; "
        "its saved config and data flags are used",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    try:
        _main(argv)
    except (config_lib.ConfigError, TrainingError) as error:
        # one line on stderr and exit status 2, like a data error
        raise data_cli.UsageError(str(error)) from None


def _main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in argv
    if resume:
        paths = RunDir(_value_of(argv, "--output"))
        if not paths.config.exists():
            raise data_cli.UsageError(
                f"{paths.root}: no run to resume (config.toml missing); "
                "start it without --resume"
            )
        saved = json.loads(paths.data_args.read_text())
        if "--interactions" not in argv:
            argv = saved.get("argv", []) + argv
        config = config_lib.load_config(paths.config)
    args = parse_args(argv)
    given = args.set or args.epochs is not None or args.split or args.config
    if resume and given:
        log.warning(
            "--resume continues with the run's saved config.toml; "
            "--config, --set, --epochs and --split are ignored"
        )
    if not resume:
        overrides = list(args.set)
        if args.split:
            overrides.append(f"data.split={args.split}")
        if args.epochs is not None:
            overrides.append(f"train.epochs={args.epochs}")
        config = config_lib.load_config(args.config, overrides)
        paths = RunDir(args.output)
        if paths.results.exists() or paths.state.exists():
            raise data_cli.UsageError(
                f"{paths.root} already holds a run; choose a new --output "
                "or add --resume to continue it"
            )
    data = data_cli.load_from_args(args)
    train(
        data,
        config,
        args.output,
        resume=resume,
        data_args={"argv": _data_argv(argv)},
    )
    log.info("report: %s", RunDir(args.output).report)


def _value_of(argv: list[str], flag: str) -> str:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise data_cli.UsageError(f"{flag} is required")


def _data_argv(argv: list[str]) -> list[str]:
    """The data flags of a command line (saved for --resume and export)."""
    skip = {"--output", "--config", "--set", "--epochs", "--split"}
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if a == "--resume":
            i += 1
            continue
        if name in skip:
            i += 1 if "=" in a else 2
            # --set takes several KEY=VALUE words
            while name == "--set" and "=" not in a and i < len(argv):
                if argv[i].startswith("--"):
                    break
                i += 1
            continue
        out.append(a)
        i += 1
    return out


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    data_cli.run_main(main)
