"""The pictures a run leaves: the row-normalized confusion matrix and the training curves (PNG)."""

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from emohrnet_jax import metrics, storage


def _write_atomically(figure: Figure, path: str) -> None:
    """Saves `figure` as PNG (a local path or gs://) so readers never see a half-written file."""
    png = io.BytesIO()  # rendered in memory, then written in one piece
    figure.savefig(png, format="png", dpi=100)
    storage.write_bytes_atomically(path, png.getvalue())


def plot_confusion_matrix(
    confusion: np.ndarray, class_names: Sequence[str], path: str, title: str = ""
) -> None:
    """Writes a PNG of the row-normalized confusion matrix, each cell annotated with count and %.

    The colour is the fraction of the true class (row) predicted as each column, so classes of
    different sizes are comparable; the title carries UA and WA.
    """
    summary = metrics.summarize(confusion, class_names)
    matrix = np.asarray(summary["confusion_matrix"], dtype=np.int64)
    rows = matrix.sum(axis=1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    n = len(class_names)

    # A Figure without pyplot needs no GUI backend and keeps no global state between calls.
    size = max(4.0, 0.9 * n + 2.0)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label="fraction of true class")
    for i in range(n):
        for j in range(n):
            colour = "white" if fraction[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{100.0 * fraction[i, j]:.1f}%",
                ha="center",
                va="center",
                color=colour,
                fontsize=8,
            )
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    scores = f"UA {100.0 * summary['ua']:.2f}%  WA {100.0 * summary['wa']:.2f}%"
    ax.set_title(f"{title}\n{scores}" if title else scores)
    _write_atomically(figure, path)


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the history items that have both "epoch" and a non-None `key`."""
    points = [
        (float(item["epoch"]), float(item[key]))
        for item in history
        if item.get("epoch") is not None and item.get(key) is not None
    ]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(history: Sequence[dict], path: str) -> None:
    """Writes a PNG with loss per epoch (train, validation) and UA per epoch (validation, train).

    History items are dicts with "epoch", "train_loss", "validation_loss", "validation_ua" and
    optionally "train_ua"; missing keys are skipped, so evaluating every few epochs is fine. The
    epoch with the best validation UA is marked on both panels.
    """
    figure = Figure(figsize=(11.0, 4.0), layout="constrained")
    loss_ax, ua_ax = figure.subplots(1, 2)
    panels = [
        (loss_ax, [("train_loss", "train"), ("validation_loss", "validation")]),
        (ua_ax, [("train_ua", "train"), ("validation_ua", "validation")]),
    ]
    # Fixed colours, so a split keeps its colour in both panels even when a series is missing.
    colours = {"train": "tab:blue", "validation": "tab:orange"}
    for ax, keys in panels:
        for key, label in keys:
            epochs, values = _series(history, key)
            if epochs:
                ax.plot(epochs, values, marker="o", markersize=3, label=label, color=colours[label])

    epochs, ua = _series(history, "validation_ua")
    finite = [(u, e) for e, u in zip(epochs, ua, strict=True) if np.isfinite(u)]
    if finite:
        best_ua, best_epoch = max(finite, key=lambda pair: (pair[0], -pair[1]))
        for ax in (loss_ax, ua_ax):
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
        ua_ax.plot(
            [best_epoch],
            [best_ua],
            marker="*",
            markersize=14,
            color="tab:red",
            linestyle="none",
            label=f"best {100.0 * best_ua:.2f}% @ epoch {best_epoch:g}",
        )

    _label_axes(loss_ax, "loss", "loss")
    _label_axes(ua_ax, "unweighted accuracy", "UA")
    _write_atomically(figure, path)


def _label_axes(ax: Axes, title: str, ylabel: str) -> None:
    """Titles, labels and a grid; a legend only when something was plotted."""
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_ua_by_fold(
    runs: Sequence[dict],
    mean_ua: float,
    pooled_ci95: Sequence[float] | None,
    path: str,
    title: str = "",
) -> None:
    """Writes a PNG of each run's test UA with its 95% interval, by fold, one colour per seed.

    Runs are dicts with "fold", "ua", optionally "seed" and "ua_ci95" ([low, high], drawn as an
    error bar). A line marks `mean_ua` (the mean over runs) and a band `pooled_ci95`.
    """
    folds = sorted({run["fold"] for run in runs})
    seeds = sorted({run.get("seed") for run in runs}, key=lambda s: (s is not None, s))
    # Seeds side by side within a fold, so their error bars do not hide each other.
    width = 0.6 / max(len(seeds), 1)
    figure = Figure(figsize=(max(5.0, 1.0 * len(folds) + 3.0), 4.0), layout="constrained")
    ax = figure.add_subplot()
    if pooled_ci95 is not None:
        low, high = pooled_ci95
        ax.axhspan(100.0 * low, 100.0 * high, color="tab:grey", alpha=0.2, label="pooled 95% CI")
    ax.axhline(100.0 * mean_ua, color="tab:grey", linestyle="--", label="mean over runs")
    for i, seed in enumerate(seeds):
        chosen = [run for run in runs if run.get("seed") == seed]
        x = [folds.index(run["fold"]) + (i - (len(seeds) - 1) / 2) * width for run in chosen]
        y = [100.0 * run["ua"] for run in chosen]
        # Runs without an interval (older results) get a zero-length bar.
        ci = [run.get("ua_ci95") or [run["ua"], run["ua"]] for run in chosen]
        error = [
            [yi - 100.0 * c[0] for yi, c in zip(y, ci, strict=True)],
            [100.0 * c[1] - yi for yi, c in zip(y, ci, strict=True)],
        ]
        ax.errorbar(
            x, y, yerr=error, fmt="o", capsize=3, label="run" if seed is None else f"seed {seed}"
        )
    ax.set_xticks(range(len(folds)), labels=[str(f) for f in folds])
    ax.set_xlabel("fold")
    ax.set_ylabel("test UA %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "test UA by fold")
    _write_atomically(figure, path)
