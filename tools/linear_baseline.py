"""A logistic-regression baseline on per-utterance log-Mel statistics, for the same fold.

  python tools/linear_baseline.py --config=configs/demo.py
  python tools/linear_baseline.py --config=configs/demo.py --features=stats --config.data.fold=1

What an HRNet result should be compared with: a linear classifier on the mean log-Mel spectrum
(`--features=mean`) or on mean, standard deviation and mean absolute frame-to-frame change per band
plus the duration (`--features=stats`). Trained on the fold's train speakers, scored (UA, WA) on
its test speakers; features are normalized per utterance as in training.
"""

from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags
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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = run(_CONFIG.value, _FEATURES.value)
    print(
        f"linear baseline ({_FEATURES.value}), {_CONFIG.value.data.dataset} fold "
        f"{_CONFIG.value.data.fold}, test: UA {result['ua']:.4f}  WA {result['wa']:.4f}  "
        f"macro-F1 {result['macro_f1']:.4f}  N {result['num_examples']}"
    )


if __name__ == "__main__":
    # Flags are defined only when run as a script, so tests can import this module.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    _FEATURES = flags.DEFINE_enum("features", "mean", ["mean", "stats"], "Per-utterance features.")
    flags.mark_flag_as_required("config")
    app.run(main)
