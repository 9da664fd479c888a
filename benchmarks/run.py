"""Runs every benchmark and writes one summary with plots.

    python -m benchmarks.run            # full run (about 7 min on 2 cores)
    python -m benchmarks.run --quick    # smoke run on small sizes

Each benchmark runs in its own process (so that thread settings and peak
memory stay its own) and writes its JSON next to the summary:
``training.json``, ``retrieval.json``, ``serving.json`` and ``data.json``.
Then ``summary.json``, ``summary.md`` and PNG plots are written into the
results folder (``benchmarks/results``, or ``benchmarks/results/quick`` for
``--quick``). Every speed is compared with a baseline measured in the same
run, so the ratios mean more than the absolute figures on a shared machine.
``--skip NAME`` reuses a benchmark's JSON from an earlier run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import time

log = logging.getLogger("benchmarks.run")

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ("training", "retrieval", "serving", "data")


# ---------------------------------------------------------------------------
# Machine.
# ---------------------------------------------------------------------------


def machine() -> dict:
    """CPU model, cores and memory of this machine (Linux /proc files)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    usable = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------------
# Running the benchmarks.
# ---------------------------------------------------------------------------


def commands(args: argparse.Namespace, out: pathlib.Path) -> dict:
    """The command line of each benchmark."""
    python = [sys.executable, "-m"]
    if args.quick:
        training = ["--epochs", "2"]
        retrieval = [
            "--sizes", "30000,60000", "--queries", "300",
            "--tuning-queries", "200", "--single-queries", "100",
            "--hnsw-ef-construction", "64",
            "--hnsw-ef-search", "8,16,32,64,128",
        ]  # fmt: skip
        rows = "1000000"
    else:
        training = ["--epochs", str(args.epochs)]
        retrieval = [
            "--sizes", args.sizes,
            "--hnsw-ef-construction", str(args.hnsw_ef_construction),
        ]  # fmt: skip
        rows = str(args.rows)
    found = {
        "training": python
        + ["benchmarks.training_benchmark", *training]
        + ["--out", str(out / "training.json")],
        "retrieval": python
        + ["benchmarks.retrieval_benchmark", *retrieval]
        + ["--out", str(out / "retrieval.json")],
        "data": python
        + ["benchmarks.load_benchmark", "--rows", rows]
        + ["--out", str(out / "data.json")],
    }
    return found


def serving_command(args: argparse.Namespace, out: pathlib.Path) -> list:
    """The serving benchmark's command line."""
    command = [sys.executable, "-m", "benchmarks.serving_benchmark"]
    command += ["--output", str(out / "serving.json")]
    if args.quick:
        command += ["--items", "20000", "--users", "2000", "--queries", "100"]
    return command


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def run_one(name: str, command: list[str], timeout: float) -> dict:
    """Runs one benchmark; its output goes to this process's stderr."""
    log.info("%s: %s", name, " ".join(command))
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=_env(),
            stdout=sys.stderr,
            timeout=timeout,
        )
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    seconds = round(time.perf_counter() - started, 1)
    log.info("%s: %s in %.0f s", name, status, seconds)
    return {"status": status, "seconds": seconds, "command": command}


def _read(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# Summary.
# ---------------------------------------------------------------------------


def _find(tree, key: str):
    """First value of `key` anywhere in nested dicts (None if absent)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _rounded(value, digits: int):
    return round(value, digits) if isinstance(value, float) else value


def _ratio(a, b, digits: int = 2):
    if a is None or not b:
        return None
    return round(a / b, digits)


RETRIEVAL_KEYS = (
    "scann_recall_at_10",
    "scann_qps",
    "scann_p50_ms",
    "scann_batch_qps",
    "brute_force_qps",
    "numpy_exact_qps",
    "faiss_hnsw_qps_at_same_recall",
    "faiss_hnsw_interpolation_clipped",
    "scann_ops_qps_at_same_recall",
    "scann_ops_batch_qps_at_same_recall",
    "faiss_hnsw_batch_qps_at_same_recall",
    "scann_over_brute_force",
    "scann_over_faiss_hnsw",
    "scann_ops_batch_over_faiss_hnsw_batch",
)
SERVING_KEYS = (
    "inprocess_p50_ms",
    "inprocess_p99_ms",
    "http_p50_ms",
    "http_p99_ms",
    "raw_search_p50_ms",
    "raw_search_p99_ms",
    "signature_p50_ms",
    "signature_p99_ms",
    "empty_function_p50_ms",
    "signature_p50_ratio",
    "inprocess_p50_ratio",
    "inprocess_p99_ratio",
    "http_p50_ratio",
    "http_p99_ratio",
)


def summarise(results: dict, runs: dict, args) -> dict:
    """The headline figures of every benchmark, one number per key."""
    summary = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "quick": bool(args.quick),
        "machine": machine(),
    }

    retrieval = results.get("retrieval") or {}
    sizes = retrieval.get("sizes", {})
    for label in sorted(set(sizes) | {"100k", "1m"}, key=_size_order):
        figures = (sizes.get(label) or {}).get("summary")
        summary[f"retrieval_{label}"] = {
            key: (figures or {}).get(key) for key in RETRIEVAL_KEYS
        }
        if figures:
            summary[f"retrieval_{label}"]["items"] = sizes[label]["items"]
            summary[f"retrieval_{label}"]["hnsw_ef_construction"] = sizes[
                label
            ]["faiss_hnsw"]["ef_construction"]
            summary[f"retrieval_{label}"]["scann_settings"] = {
                k: sizes[label]["scann_export"]["settings"][k]
                for k in (
                    "num_leaves",
                    "num_leaves_to_search",
                    "num_reordering_candidates",
                )
            }
    if sizes:
        summary["retrieval_settings"] = {
            "threads": retrieval.get("threads"),
            "hnsw_m": retrieval["settings"]["hnsw_m"],
            "hnsw_ef_construction": retrieval["settings"][
                "hnsw_ef_construction"
            ],
            "target_recall": retrieval["settings"]["target_recall"],
            "queries": retrieval["settings"]["queries"],
        }

    training = results.get("training") or {}
    project = _find(training.get("project"), "examples_per_s")
    tutorial = _find(training.get("tfrs_tutorial"), "examples_per_s")
    no_metrics = _find(
        training.get("tfrs_tutorial_no_metrics"), "examples_per_s"
    )
    summary["training"] = {
        "project_examples_per_s": project,
        "tfrs_tutorial_examples_per_s": tutorial,
        "tfrs_tutorial_no_metrics_examples_per_s": no_metrics,
        "project_over_tutorial": _ratio(project, tutorial),
        "project_over_tutorial_no_metrics": _ratio(project, no_metrics),
        "data": training.get("data"),
        "training_rows": training.get("training_rows"),
        "timed_epochs": training.get("timed_epochs"),
    }

    serving = results.get("serving")
    summary["serving"] = {
        key: _rounded(_find(serving, key), 3) for key in SERVING_KEYS
    }
    if serving is None:
        summary["serving"]["note"] = "benchmarks/serving_benchmark.py failed"

    loading = results.get("data") or {}
    summary["data"] = {
        key: loading.get(key)
        for key in ("rows", "load_split_seconds", "peak_rss_gib")
    }
    summary["data"]["rows_per_second"] = _ratio(
        loading.get("rows"), loading.get("load_split_seconds"), 0
    )
    summary["runs"] = {
        name: {k: v for k, v in run.items() if k != "command"}
        for name, run in runs.items()
    }
    # paths relative to the repository, so that summaries compare
    summary["commands"] = {
        name: (
            " ".join(run["command"][1:])
            if isinstance(run["command"], list)
            else run["command"]
        ).replace(f"{ROOT}{os.sep}", "")
        for name, run in runs.items()
    }
    summary["benchmark_seconds"] = round(
        sum(run["seconds"] for run in runs.values()), 1
    )
    return summary


def _size_order(label: str) -> float:
    scale = {"k": 1e3, "m": 1e6}.get(label[-1:], 1)
    digits = label[:-1] if label[-1:] in "km" else label
    return float(digits) * scale if digits.isdigit() else 0.0


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:,.4g}"
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def markdown(summary: dict) -> str:
    """The summary as markdown tables."""
    m = summary["machine"]
    quick = " (quick smoke run)" if summary["quick"] else ""
    lines = [
        "# Benchmark summary",
        "",
        f"{summary['created']}{quick}"
        f"; {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, "
        f"{m['ram_gib']} GiB RAM, Python {m['python']}.",
        "",
        "Each ratio compares two figures measured in the same run.",
        "",
    ]
    for key, value in summary.items():
        if not key.startswith("retrieval_") or key == "retrieval_settings":
            continue
        if value.get("scann_qps") is None:
            continue
        settings = summary.get("retrieval_settings", {})
        lines += [
            f"## Retrieval, {value.get('items', key)} items x 64 dims",
            "",
            "Single-query throughput is 1 / median latency, one thread. "
            f"HNSW: M {settings.get('hnsw_m')}, efConstruction "
            f"{value.get('hnsw_ef_construction')}; its throughput is "
            "interpolated at ScaNN's recall"
            + (
                " (clipped to the end of its sweep)."
                if value.get("faiss_hnsw_interpolation_clipped")
                else "."
            ),
            "",
            "| figure | value |",
            "|---|---|",
        ]
        for name in RETRIEVAL_KEYS:
            if name != "faiss_hnsw_interpolation_clipped":
                lines.append(f"| {name} | {_cell(value.get(name))} |")
        lines.append("")
    sections = (
        ("Training throughput (examples/s)", "training"),
        ("Serving latency", "serving"),
        ("Data loading", "data"),
    )
    for title, key in sections:
        lines += [f"## {title}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in summary[key].items()]
        lines.append("")
    lines += [
        "## Runs",
        "",
        "| benchmark | status | seconds |",
        "|---|---|---|",
    ]
    for name, run in summary["runs"].items():
        lines.append(f"| {name} | {run['status']} | {run['seconds']} |")
    lines += [
        "",
        f"Benchmarks: {summary.get('benchmark_seconds', 'n/a')} s; this "
        f"invocation of benchmarks.run: {summary.get('total_seconds')} s.",
        "",
        "Commands:",
        "",
    ]
    lines += [f"    python {c}" for c in summary["commands"].values() if c]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Plots.
# ---------------------------------------------------------------------------


def plot_retrieval(label: str, result: dict, path: pathlib.Path) -> None:
    """Recall@10 against throughput: single queries and batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    panels = (
        ("single_query_qps", "single-query throughput (1 thread)"),
        ("batch_qps", "batched throughput (queries/s)"),
    )
    sweep = result["scann_sweep"]["sweep"]
    hnsw = result["faiss_hnsw"]["sweep"]
    marks = (
        ("scann_export", "*", "tab:red", "ScaNN export (SavedModel)"),
        ("brute_force_export", "X", "tab:purple", "brute-force export"),
        ("numpy_exact", "D", "tab:gray", "numpy exact"),
    )
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        for reorder in sorted({p["reorder"] for p in sweep}):
            points = [p for p in sweep if p["reorder"] == reorder]
            ax.plot(
                [p["recall_at_10"] for p in points],
                [p[key] for p in points],
                "o-",
                ms=3,
                lw=1,
                alpha=0.7,
                label=f"ScaNN ops, reorder {reorder}",
            )
        ax.plot(
            [p["recall_at_10"] for p in hnsw],
            [p[key] for p in hnsw],
            "s-",
            color="black",
            label="FAISS HNSW (efSearch sweep)",
        )
        for name, marker, color, text in marks:
            ax.plot(
                result[name]["recall_at_10"],
                result[name][key],
                marker,
                color=color,
                ms=12 if marker == "*" else 8,
                label=text,
            )
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 against exact search")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].set_title("(every search on one thread)", fontsize=8)
    fig.suptitle(f"Retrieval on {result['items']:,} clustered 64-d vectors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(training: dict, path: pathlib.Path) -> None:
    """Steady-state examples per second of the three training loops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {
        "project": "project trainer\n(batch 1024)",
        "tfrs_tutorial": "TFRS tutorial\n(batch 8192, metrics)",
        "tfrs_tutorial_no_metrics": "TFRS tutorial\n(no train metrics)",
    }
    shown = [k for k in names if training.get(k)]
    values = [training[k]["examples_per_s"] for k in shown]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar([names[k] for k in shown], values, color="tab:blue")
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylabel("examples / s (steady state)")
    data_name = str(training.get("data", "")).split(" (")[0]
    ax.set_title(f"Training throughput on {data_name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(results: dict, out: pathlib.Path) -> list[str]:
    """Every plot the results allow; returns their file names."""
    written = []
    retrieval = results.get("retrieval") or {}
    for label, result in retrieval.get("sizes", {}).items():
        path = out / f"retrieval_recall_qps_{label}.png"
        plot_retrieval(label, result, path)
        written.append(path.name)
    if results.get("training"):
        path = out / "training_throughput.png"
        plot_training(results["training"], path)
        written.append(path.name)
    return written


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, a smoke run"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=BENCHMARKS,
        help="reuse this benchmark's JSON from an earlier run (repeatable)",
    )
    parser.add_argument(
        "--results-dir",
        type=pathlib.Path,
        help="default: benchmarks/results (quick: benchmarks/results/quick)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="training epochs per model, the first not timed",
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--hnsw-ef-construction",
        default="200",
        help="HNSW efConstruction, one value or one per size (default 200 "
        "at every size)",
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument(
        "--timeout",
        type=float,
        default=1500,
        help="seconds one benchmark may run",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    out = args.results_dir or (
        ROOT / "benchmarks" / "results" / ("quick" if args.quick else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    runs = {}
    planned = commands(args, out)
    planned["serving"] = serving_command(args, out)
    for name in BENCHMARKS:
        if name not in args.skip:
            runs[name] = run_one(name, planned[name], args.timeout)
    results = {name: _read(out / f"{name}.json") for name in BENCHMARKS}
    earlier = _read(out / "summary.json") or {}
    for name in BENCHMARKS:
        if name in args.skip:
            # keep how the reused result was measured, and how long it took
            before = earlier.get("runs", {}).get(name, {})
            status = before.get("status", "unknown").removeprefix("reused ")
            runs[name] = {
                "status": f"reused {status}",
                "seconds": before.get("seconds", 0.0),
                "command": earlier.get("commands", {}).get(name, ""),
            }
        elif name not in runs:
            runs[name] = {"status": "missing", "seconds": 0.0, "command": []}

    summary = summarise(results, runs, args)
    summary["plots"] = write_plots(results, out)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    log.info(
        "wrote %s and %s in %.0f s",
        out / "summary.json",
        out / "summary.md",
        summary["total_seconds"],
    )


if __name__ == "__main__":
    main()
