"""Evaluation metrics for emotion classification: confusion counts and UA/WA/macro-F1.

`confusion_counts` runs on device inside the jitted eval step; the confusion matrices of all batches
are summed there and `summarize` works on that one small host-side matrix. UA (unweighted
accuracy, mean per-class recall) is the headline number in speech emotion recognition because the
corpora are imbalanced; WA (weighted accuracy) is plain overall accuracy.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


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
