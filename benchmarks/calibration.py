"""How well the displayed score is calibrated, on held-out users.

    python -m benchmarks.calibration --run demo/run [--splits 20] \
        [--out benchmarks/results/calibration_demo.json]

Reads a training run's ``calibration.npz`` (the calibration users' top
candidates, their similarity and whether the user went on to interact with
them), then, for each of `--splits` random halvings of the users, fits the
isotonic map of `serving.calibration` on one half and scores the other:
Brier score of the isotonic map, of the linear fallback (1 + cosine) / 2
and of the constant base rate of the fitting half. Prints the means and
how often the isotonic map beat the base rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib

import numpy as np

from serving import calibration


def compare(pairs: dict, splits: int) -> dict:
    """Mean held-out Brier scores over random halvings of the users."""
    sims, labels, users = pairs["similarity"], pairs["label"], pairs["user"]
    distinct = np.unique(users)
    briers = {"isotonic": [], "linear": [], "base_rate": []}
    for seed in range(splits):
        rng = np.random.default_rng(seed)
        held = np.isin(users, rng.choice(distinct, len(distinct) // 2, False))
        fitted = calibration.fit_isotonic(sims[~held], labels[~held])
        truth = labels[held]
        briers["isotonic"].append(
            calibration.brier(fitted.apply(sims[held]), truth)
        )
        briers["linear"].append(
            calibration.brier(calibration.linear().apply(sims[held]), truth)
        )
        rate = np.full(held.sum(), labels[~held].mean())
        briers["base_rate"].append(calibration.brier(rate, truth))
    wins = sum(
        i < b
        for i, b in zip(briers["isotonic"], briers["base_rate"], strict=True)
    )
    return {
        "pairs": int(len(sims)),
        "positives": int(labels.sum()),
        "users": int(len(distinct)),
        "splits": splits,
        "mean_brier": {
            k: round(float(np.mean(v)), 5) for k, v in briers.items()
        },
        "isotonic_beats_base_rate": f"{wins} of {splits}",
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.calibration",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--run", required=True, type=pathlib.Path)
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path, help="JSON to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    pairs = dict(np.load(args.run / "calibration.npz"))
    result = compare(pairs, args.splits)
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
