"""Evaluation metrics for emotion classification: confusion counts and UA/WA/macro-F1.

`confusion` counts a split's utterance predictions on the host (the eval step returns window
logits, which the host averages per utterance) and `summarize` works on that small matrix. UA
(unweighted accuracy, mean per-class recall) is the headline number in speech emotion
recognition because the corpora are imbalanced; WA (weighted accuracy) is plain overall accuracy.
"""

from collections.abc import Sequence

import numpy as np


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs: `(num_classes, num_classes)` int64, rows =
    true class, columns = predicted class.

    Raises:
      ValueError: `labels` and `predicted` of different shapes, or a class outside
        [0, num_classes).
    """
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    if labels.shape != predicted.shape:
        raise ValueError(f"shapes disagree: labels {labels.shape}, predicted {predicted.shape}")
    for name, values in (("labels", labels), ("predicted", predicted)):
        if values.size and not (values.min() >= 0 and values.max() < num_classes):
            raise ValueError(f"{name} outside [0, {num_classes}): {sorted(set(values.tolist()))}")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


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
