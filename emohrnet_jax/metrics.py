"""Evaluation metrics for emotion classification: confusion counts, UA/WA/macro-F1, plots, tables.

`confusion_counts` runs on device inside the jitted eval step; the confusion matrices of all batches
are summed there and everything else works on that one small host-side matrix. UA (unweighted
accuracy, mean per-class recall) is the headline number in speech emotion recognition because the
corpora are imbalanced; WA (weighted accuracy) is plain overall accuracy.
"""

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def confusion_counts(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int
) -> jax.Array:
    """Counts (true class, predicted class) pairs of the examples where `mask` is True.

    Pure jnp, so it can run inside `jax.jit` (with `num_classes` static).

    Args:
      logits: (..., num_classes) scores; the prediction is their argmax.
      labels: (...) integer true classes in [0, num_classes).
      mask: (...) booleans; False marks padding examples, which are not counted.
      num_classes: the number of classes.

    Returns:
      (num_classes, num_classes) int32 counts, rows = true class, columns = predicted class.
    """
    if logits.shape[-1] != num_classes:
        raise ValueError(f"logits have {logits.shape[-1]} classes, expected {num_classes}")
    if logits.shape[:-1] != labels.shape or labels.shape != mask.shape:
        raise ValueError(
            f"shapes disagree: logits {logits.shape}, labels {labels.shape}, mask {mask.shape}"
        )
    predicted = jnp.argmax(logits, axis=-1).reshape(-1).astype(jnp.int32)
    true = labels.reshape(-1).astype(jnp.int32)
    weight = mask.reshape(-1).astype(jnp.int32)
    # One flat bin per (true, predicted) cell: an exact integer scatter-add, no float rounding.
    # segment_sum drops out-of-range ids, so a stray label outside [0, C) is not counted.
    in_range = (true >= 0) & (true < num_classes)
    cell = jnp.where(in_range, true * num_classes + predicted, -1)
    counts = jax.ops.segment_sum(weight, cell, num_segments=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


def summarize(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """UA, WA, macro-F1 and per-class recall from a confusion matrix (rows = true class).

    Classes with no true examples are left out of UA and macro-F1 (their recall is undefined and
    reported as None); the F1 of a present class that is never predicted is 0.

    Returns:
      A JSON-serializable dict: "ua", "wa", "macro_f1" (floats), "per_class_recall" ({name: float
      or None}), "confusion_matrix" (nested list of ints), "num_examples" (int).

    Raises:
      ValueError: if the matrix is not square, does not match `class_names`, has negative or
        fractional counts, or is empty (no classes or no examples).
    """
    matrix = np.asarray(confusion)
    names = list(class_names)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
    if matrix.shape[0] != len(names):
        raise ValueError(f"confusion matrix is {matrix.shape} but there are {len(names)} classes")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    if matrix.size == 0:
        raise ValueError("confusion matrix is empty")
    if np.any(matrix < 0) or np.any(matrix != np.round(matrix)):
        raise ValueError("confusion matrix must hold non-negative integer counts")
    matrix = matrix.astype(np.int64)
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("confusion matrix counts no examples")

    true_count = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    hits = np.diag(matrix)
    present = true_count > 0
    recall = hits[present] / true_count[present]
    # 2*TP / (true + predicted) is 2PR / (P + R) without the 0/0 of a never-predicted class.
    f1 = 2.0 * hits[present] / (true_count[present] + predicted_count[present])
    per_class = {
        name: float(hits[i] / true_count[i]) if present[i] else None for i, name in enumerate(names)
    }
    return {
        "ua": float(recall.mean()),
        "wa": float(hits.sum() / total),
        "macro_f1": float(f1.mean()),
        "per_class_recall": per_class,
        "confusion_matrix": matrix.tolist(),
        "num_examples": total,
    }


def _write_atomically(figure: Figure, path: str) -> None:
    """Saves `figure` as PNG so readers never see a half-written file at `path`."""
    tmp = path + ".tmp.png"
    try:
        figure.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_confusion_matrix(
    confusion: np.ndarray, class_names: Sequence[str], path: str, title: str = ""
) -> None:
    """Writes a PNG of the row-normalized confusion matrix, each cell annotated with count and %.

    The colour is the fraction of the true class (row) predicted as each column, so classes of
    different sizes are comparable; the title carries UA and WA.
    """
    summary = summarize(confusion, class_names)
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


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def format_table(results: dict) -> str:
    """A plain-text console table: UA, WA, macro-F1 (all %) and N per split, then test recalls.

    Args:
      results: optional "validation" and "test" entries shaped like `summarize`'s output.
    """
    splits = [split for split in ("validation", "test") if results.get(split) is not None]
    if not splits:
        return "no results"
    row = "{:<10}  {:>7}  {:>7}  {:>10}  {:>7}"
    lines = [row.format("split", "UA %", "WA %", "macro-F1 %", "N")]
    for split in splits:
        summary = results[split]
        lines.append(
            row.format(
                split,
                _percent(summary["ua"]),
                _percent(summary["wa"]),
                _percent(summary["macro_f1"]),
                summary["num_examples"],
            )
        )

    recall = (results.get("test") or {}).get("per_class_recall")
    if recall:
        name_width = max(len(name) for name in recall)
        lines.append("")
        lines.append("test recall %")
        lines.extend(f"  {name.ljust(name_width)}  {_percent(r):>7}" for name, r in recall.items())
    return "\n".join(lines)
