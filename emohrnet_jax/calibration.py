"""Temperature scaling: one scalar that divides the logits, fitted on the validation split.

A network trained with cross-entropy is often over-confident; dividing its logits by the
temperature that minimizes the validation split's negative log-likelihood (Guo et al., 2017)
calibrates the probabilities without changing any prediction (the argmax is the same). A run
stores it in `calibration.json` with the best state's step, and `predict` (and `--mode=evaluate`)
use it only with that state: a run trained on after the fit has another best state.
"""

import os
from typing import Any

import numpy as np
from absl import logging

from emohrnet_jax import storage, windows

FILE = "calibration.json"
# The inverse temperature is searched in [1/100, 100]: far beyond what a trained network needs.
_LOWEST, _HIGHEST = 1e-2, 1e2


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of `softmax(logits / temperature)` `(N, C)` on integer `labels`."""
    probabilities = windows.softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(probabilities, np.finfo(np.float64).tiny))))


def _slope(logits: np.ndarray, labels: np.ndarray, inverse: float) -> float:
    """d NLL / d(1/T): the expected logit under the model minus the true class's logit."""
    finite = np.where(np.isfinite(logits), logits, 0.0)
    probabilities = windows.softmax(logits * inverse)
    expected = np.sum(probabilities * finite, axis=1)
    return float(np.mean(expected - finite[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> float:
    """The temperature minimizing the NLL of `logits` `(N, C)` with `labels` `(N,)`.

    The NLL is convex in the inverse temperature (a log-sum-exp of linear functions minus a
    linear one), so bisection on its slope finds the minimum; predictions that are all right
    (the NLL falls as 1/T grows) take the search's bound.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        raise ValueError("cannot fit a temperature on no utterances")
    low, high = np.log(_LOWEST), np.log(_HIGHEST)
    if _slope(logits, labels, _HIGHEST) <= 0:
        return 1.0 / _HIGHEST
    if _slope(logits, labels, _LOWEST) >= 0:
        return 1.0 / _LOWEST
    for _ in range(iterations):  # on log(1/T): the bound's range spans four decades
        middle = (low + high) / 2
        if _slope(logits, labels, float(np.exp(middle))) < 0:
            low = middle
        else:
            high = middle
    return float(np.exp(-(low + high) / 2))


def fit(logits: np.ndarray, labels: np.ndarray, best_step: int) -> dict[str, Any]:
    """The record `save` writes: the fitted temperature, for which state, and what it changed."""
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": temperature,
        "best_step": int(best_step),
        "fitted_on": "validation",
        "validation_nll": {
            "before": negative_log_likelihood(logits, labels, 1.0),
            "after": negative_log_likelihood(logits, labels, temperature),
        },
    }


def save(workdir: str, record: dict[str, Any]) -> None:
    """Writes `fit`'s record to the run's `calibration.json`, atomically."""
    storage.write_json_atomically(os.path.join(workdir, FILE), record)


def load_temperature(workdir: str, best_step: int) -> float:
    """The run's fitted temperature for the best state at `best_step`; 1.0 when the run has none
    (trained without temperature scaling, or before it existed) or fitted it to another state."""
    path = os.path.join(workdir, FILE)
    if not storage.exists(path):
        return 1.0
    record = storage.read_json(path)
    if record.get("best_step") != best_step:
        logging.warning(
            "%s was fitted to the state of step %s, not the best state (step %d): not used",
            path,
            record.get("best_step"),
            best_step,
        )
        return 1.0
    return float(record["temperature"])
