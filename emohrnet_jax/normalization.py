"""The normalization a run uses (`config.data.normalization`), and its training-split statistics.

`"utterance"` and `"utterance_band"` need nothing but the clip. `"training_band"` normalizes each
Mel band with the mean and variance of all frames of the fold's training utterances (never
validation or test), computed once when the run starts, in float64 sums over the stored float16
log-Mels one utterance at a time, in stored order (deterministic). They are saved in the run's
`normalization.json`, which training, evaluation, `predict` and export read. No TensorFlow at
import: `predict` loads the statistics without it.
"""

import hashlib
import os
from collections.abc import Iterable
from typing import Any

import ml_collections
import numpy as np

from emohrnet_jax import runs, storage
from emohrnet_jax.audio import features

FILE = "normalization.json"


class NormalizationError(runs.RunError, ValueError):
    """No training utterances, or a run's normalization.json missing or not fitting its config
    (a RunError for serving, a ValueError, one line, for training's command line)."""


def mode(config: ml_collections.ConfigDict) -> str:
    """`config.data.normalization` (an older config without the field: per utterance)."""
    return config.data.get("normalization", features.UTTERANCE)


def training_statistics(examples: Iterable[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Per-band mean and `sqrt(variance + NORMALIZATION_EPSILON)` over all frames of `examples`.

    Args:
      examples: `(id, stored log-Mel (n_mels, frames))` of each training utterance.

    Returns:
      The record normalization.json holds: `mean`, `scale` (lists, one per band), `utterances`,
      `frames` and `train_ids_sha256` (of the sorted ids, to tell which utterances they are from).
    """
    total = squares = None
    frames, ids = 0, []
    for utterance_id, mel in examples:
        cells = np.asarray(mel, np.float64)
        total = (0.0 if total is None else total) + cells.sum(axis=1)
        squares = (0.0 if squares is None else squares) + np.square(cells).sum(axis=1)
        frames += cells.shape[1]
        ids.append(utterance_id)
    if not frames:
        raise NormalizationError("training_band normalization needs training utterances: none")
    mean = total / frames
    variance = np.maximum(squares / frames - np.square(mean), 0.0)
    return {
        "mode": features.TRAINING_BAND,
        "mean": mean.tolist(),
        "scale": np.sqrt(variance + features.NORMALIZATION_EPSILON).tolist(),
        "epsilon": features.NORMALIZATION_EPSILON,
        "utterances": len(ids),
        "frames": frames,
        "train_ids_sha256": hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest(),
    }


def _training_examples(fold: Any) -> Iterable[tuple[str, np.ndarray]]:
    """`(id, stored log-Mel)` of each of `fold`'s (a data.pipeline.FoldInput) training examples."""
    import tensorflow_datasets as tfds  # Here only: prediction imports this module without TF.

    # The stored examples, before the normalization that these statistics are for.
    for example in tfds.as_numpy(fold.stored("train")):
        yield example["id"].decode(), example["mel"]


def for_run(
    config: ml_collections.ConfigDict, workdir: str, fold: Any, write: bool = True
) -> features.Normalization:
    """The normalization of a run that is starting (or resuming) in `workdir` on `fold`.

    `training_band`: the run's normalization.json when it has one (a resumed run: the same
    training split, as run_config checks), else the statistics of `fold`'s training split,
    written there (`write`: only the process that writes the run's files).
    """
    if mode(config) != features.TRAINING_BAND:
        return features.Normalization(mode(config))
    path = os.path.join(workdir, FILE)
    if not storage.exists(path):
        record = training_statistics(_training_examples(fold))
        record.update(dataset=config.data.dataset, fold=config.data.fold)
        if write:
            storage.write_json_atomically(path, record)
        return _from_record(record, config, path)
    return load(config, workdir)


def load(config: ml_collections.ConfigDict, workdir: str) -> features.Normalization:
    """The normalization a trained run in `workdir` was trained with (its config's).

    Raises:
      NormalizationError: a training_band run without a normalization.json that fits its bands.
    """
    if mode(config) != features.TRAINING_BAND:
        return features.Normalization(mode(config))
    path = os.path.join(workdir, FILE)
    if not storage.exists(path):
        raise NormalizationError(
            f"{path} is missing: this run normalizes with its training split's statistics"
        )
    return _from_record(storage.read_json(path), config, path)


def _from_record(
    record: dict[str, Any], config: ml_collections.ConfigDict, path: str
) -> features.Normalization:
    bands = int(config.data.n_mels)
    if len(record.get("mean", ())) != bands or len(record.get("scale", ())) != bands:
        raise NormalizationError(f"{path} does not hold {bands} bands' mean and scale")
    return features.Normalization(
        features.TRAINING_BAND, tuple(record["mean"]), tuple(record["scale"])
    )
