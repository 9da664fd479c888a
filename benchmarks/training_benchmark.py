"""Training throughput of the project's trainer beside the TFRS tutorial's.

    python -m benchmarks.training_benchmark --epochs 3 \
        --out benchmarks/results/training.json

Both models train on the same rows: the training part of the project's
temporal split of ML-100K (``../shared/data/ml-100k``, or ``--data``) or,
when that folder is missing, of the built-in synthetic log.

- project: `training.model.TwoTowerModel` fed by `data.pipeline.make_dataset`
  with the default configuration (history pooling, item and user features,
  in-batch softmax with logQ correction, batch 1024, Adam).
- tfrs_tutorial: the model of TFRS's basic retrieval tutorial, written out
  here: user-id and item-id embeddings of width 32 behind ``StringLookup``,
  ``tfrs.tasks.Retrieval`` whose ``FactorizedTopK`` metrics score every
  candidate on every training step (as the tutorial has them), batch 8192,
  Adagrad 0.1.
- tfrs_tutorial_no_metrics: the same with the metrics computed only when
  evaluating, to show what they cost.

Throughput is examples per second over the epochs after the first (the
first one traces and compiles the step). TensorFlow uses its default
threads for all three.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import tempfile
import time

import numpy as np

import data  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from data.load import load
from data.schema import ColumnMap, LoadedData

log = logging.getLogger("benchmarks.training_benchmark")

ML_100K = pathlib.Path(__file__).resolve().parents[2] / "shared/data/ml-100k"


def load_data(folder: pathlib.Path | None, workdir: pathlib.Path):
    """ML-100K when present, else the synthetic log; returns (data, name)."""
    folder = folder or ML_100K
    if (folder / "interactions.csv").exists():
        name = f"ml-100k ({folder})"
    else:
        from data.synthetic import generate

        log.info("%s not found; using the synthetic log", folder)
        generate(workdir)
        folder, name = workdir, "synthetic (data.synthetic, seed 0)"
    loaded = load(
        str(folder / "interactions.csv"),
        items=str(folder / "items.csv"),
        users=str(folder / "users.csv"),
        columns=ColumnMap(
            weight="rating",
            item_text="title",
            item_categories="genres",
            item_numeric=("year",),
        ),
    )
    return loaded, name


def epoch_timer():
    """A Keras callback whose ``seconds`` lists each epoch's wall time."""
    import tensorflow as tf

    class EpochTimer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def throughput(seconds: list[float], examples: int) -> dict:
    """Steady-state examples per second: every epoch after the first."""
    steady = seconds[1:] or seconds
    return {
        "examples_per_epoch": examples,
        "epoch_seconds": [round(s, 3) for s in seconds],
        "first_epoch_seconds": round(seconds[0], 3),
        "examples_per_s": round(examples * len(steady) / sum(steady), 1),
    }


def bench_project(loaded: LoadedData, epochs: int) -> tuple[dict, object]:
    """The project's model and input pipeline, default configuration.

    Returns:
      The throughput record and the prepared split (reused by the
      tutorial's loop so both train on the same rows).
    """
    import tensorflow as tf

    from training.config import Config
    from training.train import build_model, prepare

    config = Config()
    tf.keras.utils.set_random_seed(config.train.seed)
    prep = prepare(loaded, config)
    model, dataset = build_model(
        config,
        prep.encoder,
        prep.sequences,
        prep.examples,
        prep.item_probability,
    )
    timer = epoch_timer()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    result = throughput(timer.seconds, len(prep.examples))
    result["batch_size"] = config.train.batch_size
    log.info("project: %s", result)
    return result, prep


def tutorial_model(user_ids, item_ids, *, metrics_in_training: bool):
    """The basic retrieval tutorial's model over string ids.

    Args:
      user_ids: [U] distinct user ids (strings).
      item_ids: [I] distinct item ids; also the metrics' candidates.
      metrics_in_training: Compute FactorizedTopK on every training step.
    """
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    dim = 32

    def tower(vocabulary):
        return tf.keras.Sequential(
            [
                tf.keras.layers.StringLookup(
                    vocabulary=vocabulary, mask_token=None
                ),
                tf.keras.layers.Embedding(len(vocabulary) + 1, dim),
            ]
        )

    class TutorialModel(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.user_model = tower(user_ids)
            self.item_model = tower(item_ids)
            candidates = tf.data.Dataset.from_tensor_slices(item_ids)
            self.task = tfrs.tasks.Retrieval(
                metrics=tfrs.metrics.FactorizedTopK(
                    candidates=candidates.batch(128).map(self.item_model)
                )
            )

        def compute_loss(self, features, training=False):
            query = self.user_model(features["user_id"])
            candidate = self.item_model(features["item_id"])
            return self.task(
                query,
                candidate,
                compute_metrics=metrics_in_training or not training,
            )

    return TutorialModel()


def bench_tutorial(
    prep, epochs: int, *, metrics_in_training: bool, batch_size: int = 8192
) -> dict:
    """The tutorial's training loop on the project's training rows."""
    import tensorflow as tf

    train = prep.split.train
    users = np.asarray(train.column("user_id").to_pylist(), dtype=object)
    items = np.asarray(train.column("item_id").to_pylist(), dtype=object)
    all_items = prep.encoder.items.to_list()
    tf.keras.utils.set_random_seed(0)
    model = tutorial_model(
        np.unique(users).astype(str),
        np.asarray(all_items, dtype=str),
        metrics_in_training=metrics_in_training,
    )
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    dataset = (
        tf.data.Dataset.from_tensor_slices(
            {"user_id": users.astype(str), "item_id": items.astype(str)}
        )
        .shuffle(100_000, seed=0, reshuffle_each_iteration=False)
        .batch(batch_size)
        .cache()
    )
    timer = epoch_timer()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    result = throughput(timer.seconds, len(users))
    result["batch_size"] = batch_size
    result["metrics_in_training"] = metrics_in_training
    log.info(
        "tfrs tutorial (metrics in training %s): %s",
        metrics_in_training,
        result,
    )
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.training_benchmark",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs per model, the first of which is not timed",
    )
    parser.add_argument(
        "--data",
        type=pathlib.Path,
        help="folder with interactions.csv, items.csv, users.csv "
        "(default: ../shared/data/ml-100k, else synthetic)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("benchmarks/results/training.json"),
    )
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is not timed)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="training_bench_") as folder:
        loaded, name = load_data(args.data, pathlib.Path(folder))
    project, prep = bench_project(loaded, args.epochs)
    tutorial = bench_tutorial(prep, args.epochs, metrics_in_training=True)
    no_metrics = bench_tutorial(prep, args.epochs, metrics_in_training=False)
    result = {
        "data": name,
        "training_rows": int(prep.split.train.num_rows),
        "epochs": args.epochs,
        "timed_epochs": args.epochs - 1,
        "threads": f"TensorFlow default ({os.cpu_count()} cores)",
        "project": project,
        "tfrs_tutorial": tutorial,
        "tfrs_tutorial_no_metrics": no_metrics,
        "project_over_tutorial": round(
            project["examples_per_s"] / tutorial["examples_per_s"], 2
        ),
        "project_over_tutorial_no_metrics": round(
            project["examples_per_s"] / no_metrics["examples_per_s"], 2
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "project %.0f examples/s, tutorial %.0f (%.2fx); wrote %s",
        project["examples_per_s"],
        tutorial["examples_per_s"],
        result["project_over_tutorial"],
        args.out,
    )


if __name__ == "__main__":
    main()
