"""Recommendation quality of the default config over several seeds.

    python -m benchmarks.quality --data ml-100k --seeds 0,1,2 \
        --out benchmarks/results/quality_ml-100k.json
    python -m benchmarks.quality --data synthetic \
        --out benchmarks/results/quality_synthetic.json

Trains `python -m training.train` once per seed with the default
configuration (only ``train.seed`` changes) on MovieLens 100K
(``../shared/data/ml-100k``) or on the built-in synthetic log, and
collects each run's test metrics for the model and the baselines it
computes in the same run. The output JSON holds every run, the mean,
minimum and maximum of each metric, the model's recall@10 as a ratio to
each baseline's, and the wall time of each run; a markdown table is
printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

log = logging.getLogger("benchmarks.quality")

ROOT = pathlib.Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10")
COVERAGE = "coverage@10"


def data_flags(name: str, workdir: pathlib.Path) -> list[str]:
    """`training.train` data flags for a data set name."""
    if name == "ml-100k":
        if not (ML100K / "interactions.csv").exists():
            raise SystemExit(f"MovieLens 100K not found at {ML100K}")
        folder = ML100K
    elif name == "synthetic":
        folder = workdir / "synthetic"
        subprocess.run(
            [sys.executable, "-m", "data.synthetic", "--output", str(folder)],
            cwd=ROOT,
            env=_env(),
            check=True,
        )
    else:
        raise SystemExit(f"unknown --data {name!r}; ml-100k or synthetic")
    return [
        "--interactions", str(folder / "interactions.csv"),
        "--items", str(folder / "items.csv"),
        "--users", str(folder / "users.csv"),
        "--item-text-col", "title",
        "--item-category-col", "genres",
        "--item-numeric-cols", "year",
    ]  # fmt: skip


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def run_seed(flags: list[str], seed: int, workdir: pathlib.Path) -> dict:
    """One training run; its results.json and wall time."""
    run_dir = workdir / f"seed-{seed}"
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            *flags,
            "--set",
            f"train.seed={seed}",
            "--output",
            str(run_dir),
        ],
        cwd=ROOT,
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    results = json.loads((run_dir / "results.json").read_text())
    log.info(
        "seed %d: recall@10 %.4f in %.0f s",
        seed,
        results["results"]["model"]["recall@10"],
        seconds,
    )
    return {"seed": seed, "seconds": round(seconds, 1), **results}


def summarise(runs: list[dict]) -> dict:
    """Mean, min and max of each metric, and recall@10 ratios."""
    models = runs[0]["results"].keys()
    table = {}
    for model in models:
        table[model] = {}
        for metric in (*METRICS, COVERAGE):
            values = [r["results"][model][metric] for r in runs]
            table[model][metric] = {
                "mean": round(float(np.mean(values)), 4),
                "min": round(float(np.min(values)), 4),
                "max": round(float(np.max(values)), 4),
            }
    model_recall = [r["results"]["model"]["recall@10"] for r in runs]
    ratios = {}
    for baseline in models:
        if baseline == "model":
            continue
        per_seed = [
            m / r["results"][baseline]["recall@10"]
            for m, r in zip(model_recall, runs, strict=True)
        ]
        ratios[baseline] = {
            "mean_over_mean": round(
                float(np.mean(model_recall))
                / table[baseline]["recall@10"]["mean"],
                3,
            ),
            "min": round(float(np.min(per_seed)), 3),
            "max": round(float(np.max(per_seed)), 3),
        }
    return {
        "table": table,
        "model_recall_at_10_over": ratios,
        "seconds_per_run": {
            "max": max(r["seconds"] for r in runs),
            "mean": round(float(np.mean([r["seconds"] for r in runs])), 1),
        },
    }


def markdown(summary: dict) -> str:
    """The mean table as markdown, the best value of each column bold."""
    table = summary["table"]
    columns = (*METRICS, COVERAGE)
    best = {c: max(table[m][c]["mean"] for m in table) for c in columns}
    lines = [
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for model, row in table.items():
        cells = []
        for c in columns:
            value = f"{row[c]['mean']:.4f}"
            cells.append(f"**{value}**" if row[c]["mean"] == best[c] else value)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    seeds = [int(s) for s in args.seeds.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        flags = data_flags(args.data, workdir)
        runs = [run_seed(flags, seed, workdir) for seed in seeds]
    # the command as a reader would type it
    shown = [
        f.replace(str(workdir / "synthetic"), "DATA_DIR").replace(
            f"{ROOT.parent}{os.sep}", "../"
        )
        for f in flags
    ]
    command = "python -m training.train " + " ".join(shown)
    if args.data == "synthetic":
        command = "python -m data.synthetic --output DATA_DIR; " + command

    summary = summarise(runs)
    result = {
        "data": args.data,
        "seeds": seeds,
        "command": command + " --set train.seed=SEED --output RUN_DIR",
        **summary,
        "runs": [
            {
                "seed": r["seed"],
                "seconds": r["seconds"],
                "best_epoch": r["best_epoch"],
                "epochs_run": r["epochs_run"],
                "results": r["results"],
            }
            for r in runs
        ],
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(summary))
    print(json.dumps(result["model_recall_at_10_over"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
