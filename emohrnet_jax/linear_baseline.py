"""A logistic-regression baseline on per-utterance log-Mel statistics, for one fold.

What an HRNet result should be compared with: a linear classifier on the mean log-Mel spectrum
(`mean`) or on mean, standard deviation and mean absolute frame-to-frame change per band plus the
duration (`stats`). Trained on the fold's train speakers, scored (UA, WA) on its test speakers;
features are normalized per utterance as in training. Needs scikit-learn (the `test` extra);
`tools/linear_baseline.py` is its command line.
"""

from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from emohrnet_jax import metrics
from emohrnet_jax.data import pipeline


def utterance_features(mel: np.ndarray, kind: str) -> np.ndarray:
    """Per-band statistics of one normalized `(n_mels, n_frames)` log-Mel spectrogram."""
    if kind == "mean":
        return mel.mean(axis=1)
    change = np.abs(np.diff(mel, axis=1)).mean(axis=1) if mel.shape[1] > 1 else mel[:, 0] * 0
    return np.concatenate([mel.mean(axis=1), mel.std(axis=1), change, [mel.shape[1]]])


def run(config: ml_collections.ConfigDict, kind: str) -> dict[str, Any]:
    """Fits on the fold's train speakers; returns `metrics.summarize` of its test predictions."""
    fold = pipeline.create_fold_input(config)
    data = {}
    for split in ("train", "test"):
        examples = list(tfds.as_numpy(fold.split(split)))
        data[split] = (
            np.stack([utterance_features(e["mel"], kind) for e in examples]),
            np.array([e["label"] for e in examples]),
        )
    scaler = StandardScaler().fit(data["train"][0])
    classifier = LogisticRegression(max_iter=5000).fit(
        scaler.transform(data["train"][0]), data["train"][1]
    )
    predicted = classifier.predict(scaler.transform(data["test"][0]))
    num_classes = len(fold.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (data["test"][1], predicted), 1)
    return metrics.summarize(confusion, fold.class_names)
