"""A logistic-regression baseline on per-utterance log-Mel statistics, for one fold.

What an HRNet result should be compared with: a linear classifier on the mean log-Mel spectrum
(`mean`) or on mean, standard deviation and mean absolute frame-to-frame change per band plus the
duration (`stats`). Trained on the fold's train speakers, scored (UA, WA) on its test speakers;
features are normalized per utterance as in training. `write_run` stores the test predictions
as a run folder does, for `python -m emohrnet_jax.compare`. Needs scikit-learn (the `test`
extra); `tools/linear_baseline.py` is its command line.
"""

import json
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from emohrnet_jax import metrics, statistics, storage
from emohrnet_jax.data import pipeline

# Speaker-bootstrap resamples of the test metrics' intervals (seed 0).
BOOTSTRAP_RESAMPLES = 1000


def utterance_features(mel: np.ndarray, kind: str) -> np.ndarray:
    """Per-band statistics of one normalized `(n_mels, n_frames)` log-Mel spectrogram."""
    if kind == "mean":
        return mel.mean(axis=1)
    change = np.abs(np.diff(mel, axis=1)).mean(axis=1) if mel.shape[1] > 1 else mel[:, 0] * 0
    return np.concatenate([mel.mean(axis=1), mel.std(axis=1), change, [mel.shape[1]]])


def predict_test(config: ml_collections.ConfigDict, kind: str) -> dict[str, Any]:
    """Fits on the fold's train speakers; returns its test predictions.

    Returns:
      "class_names", and per test utterance (in stored order) "ids", "speakers", "labels"
      (`(N,)` class indices) and "probabilities" (`(N, classes)`, in class_names order; a class
      absent from the train speakers gets 0).
    """
    fold = pipeline.create_fold_input(config)
    examples = {split: list(tfds.as_numpy(fold.split(split))) for split in ("train", "test")}
    data = {
        split: (
            np.stack([utterance_features(e["mel"], kind) for e in split_examples]),
            np.array([e["label"] for e in split_examples]),
        )
        for split, split_examples in examples.items()
    }
    scaler = StandardScaler().fit(data["train"][0])
    classifier = LogisticRegression(max_iter=5000).fit(
        scaler.transform(data["train"][0]), data["train"][1]
    )
    probabilities = np.zeros((len(data["test"][1]), len(fold.class_names)))
    probabilities[:, classifier.classes_] = classifier.predict_proba(
        scaler.transform(data["test"][0])
    )
    return {
        "class_names": list(fold.class_names),
        "ids": [e["id"].decode() for e in examples["test"]],
        "speakers": [e["speaker"].decode() for e in examples["test"]],
        "labels": data["test"][1],
        "probabilities": probabilities,
    }


def run(config: ml_collections.ConfigDict, kind: str) -> dict[str, Any]:
    """Fits on the fold's train speakers; returns `metrics.summarize` of its test predictions."""
    return _summary(predict_test(config, kind))


def _summary(test: dict[str, Any]) -> dict[str, Any]:
    num_classes = len(test["class_names"])
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (test["labels"], test["probabilities"].argmax(axis=1)), 1)
    return metrics.summarize(confusion, test["class_names"])


def write_run(config: ml_collections.ConfigDict, kind: str, folder: str) -> dict[str, Any]:
    """Writes `folder/results.json` and `folder/predictions_test.jsonl`, as a trained run's.

    `python -m emohrnet_jax.compare` then compares them with a trained run on the same fold.
    Returns the test metrics (`metrics.summarize` plus the speaker-bootstrap `ci95`,
    `per_speaker_ua`, `ece` and `brier`).
    """
    test = predict_test(config, kind)
    num_classes = len(test["class_names"])
    predicted = test["probabilities"].argmax(axis=1)
    summary = {
        **_summary(test),
        "ci95": statistics.speaker_bootstrap(
            test["labels"], predicted, test["speakers"], num_classes, BOOTSTRAP_RESAMPLES
        ),
        "per_speaker_ua": statistics.per_speaker_ua(
            test["labels"], predicted, test["speakers"], num_classes
        ),
        **statistics.calibration(test["labels"], test["probabilities"]),
    }
    lines = [
        json.dumps(
            {"id": id_, "speaker": speaker, "label": int(label), "probabilities": row.tolist()}
        )
        for id_, speaker, label, row in zip(
            test["ids"], test["speakers"], test["labels"], test["probabilities"], strict=True
        )
    ]
    storage.makedirs(folder)
    storage.write_bytes_atomically(
        os.path.join(folder, "predictions_test.jsonl"), ("\n".join(lines) + "\n").encode()
    )
    results = {
        "model": f"linear_baseline ({kind})",
        "dataset": config.data.dataset,
        "fold": int(config.data.fold),
        "class_names": test["class_names"],
        "bootstrap": {"unit": "speaker", "resamples": BOOTSTRAP_RESAMPLES, "seed": 0},
        "test": summary,
    }
    storage.write_json_atomically(os.path.join(folder, "results.json"), results)
    return summary
