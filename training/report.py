"""The run report: a metrics table beside the baselines, and plots.

`write_report` writes ``RUN_DIR/report.md`` and, under ``RUN_DIR/plots/``,
``learning_curves.png`` (loss and validation recall@10 per epoch) and
``recall_at_k.png`` (recall@k for k = 1..max_k, the model beside the
baselines).
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

COLUMNS = (
    "recall@10",
    "recall@20",
    "ndcg@10",
    "ndcg@20",
    "mrr@10",
    "coverage@10",
)
VALIDATION_METRIC = "val_recall@10"


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "the report's plots need matplotlib: pip install matplotlib"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def metrics_table(
    results: Mapping[str, Mapping[str, float]], model_name: str
) -> str:
    """A markdown table with one row per model and one column per metric."""
    header = "| model | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [header, rule]
    for name, metrics in results.items():
        label = f"**{name}**" if name == model_name else name
        cells = " | ".join(_cell(metrics.get(c)) for c in COLUMNS)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def _plot_learning_curves(
    history: Sequence[Mapping[str, float]], path: pathlib.Path
) -> None:
    plt = _pyplot()
    fig, (loss_ax, recall_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]

    loss_ax.plot(epochs, [h.get("loss", np.nan) for h in history], "o-")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("Loss")
    loss_ax.grid(alpha=0.3)

    recall = [h.get(VALIDATION_METRIC, np.nan) for h in history]
    recall_ax.plot(epochs, recall, "o-", color="tab:green")
    title = "Validation recall@10"
    if not np.all(np.isnan(np.asarray(recall, float))):
        best = int(np.nanargmax(recall))
        recall_ax.axvline(epochs[best], color="gray", ls="--", lw=1)
        title += f" (best {recall[best]:.4f}, epoch {epochs[best]})"
    recall_ax.set_xlabel("epoch")
    recall_ax.set_ylabel("validation recall@10")
    recall_ax.set_title(title)
    recall_ax.grid(alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_recall_curves(
    curves: Mapping[str, np.ndarray], model_name: str, path: pathlib.Path
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, curve in curves.items():
        k = np.arange(1, len(curve) + 1)
        is_model = name == model_name
        ax.plot(
            k,
            curve,
            lw=2.5 if is_model else 1.5,
            ls="-" if is_model else "--",
            label=name,
        )
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_title("Recall@k on the test set")
    ax.set_xlim(left=1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    run_dir: pathlib.Path,
    *,
    model_name: str,
    results: dict[str, dict[str, float]],
    curves: dict[str, np.ndarray],
    history: list[dict],
    notes: list[str],
) -> pathlib.Path:
    """Writes the run's markdown report and its plots.

    Args:
      run_dir: Folder of the run; created if missing.
      model_name: Key of the trained model in `results` and `curves`.
      results: Metrics per model, the model first, then the baselines.
      curves: [max_k] mean recall@k for k = 1..max_k per model.
      history: One dict per epoch with ``epoch``, ``loss`` and validation
        metrics such as ``val_recall@10``.
      notes: Free lines added under the table (data, split, skipped
        baselines).

    Returns:
      The path of ``report.md``.
    """
    run_dir = pathlib.Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)

    sections = [
        f"# Run report: {model_name}",
        "",
        (
            "Test-set metrics: full ranking over the training item space, "
            "training items masked (see docs/evaluation.md)."
        ),
        "",
        metrics_table(results, model_name),
        "",
    ]
    if notes:
        sections += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]

    if history:
        _plot_learning_curves(history, plots / "learning_curves.png")
        sections += [
            "## Learning curves",
            "",
            "![learning curves](plots/learning_curves.png)",
            "",
        ]
    if curves:
        _plot_recall_curves(curves, model_name, plots / "recall_at_k.png")
        sections += [
            "## Recall@k",
            "",
            "![recall@k](plots/recall_at_k.png)",
            "",
        ]

    path = run_dir / "report.md"
    path.write_text("\n".join(sections))
    logger.info("wrote %s", path)
    return path
