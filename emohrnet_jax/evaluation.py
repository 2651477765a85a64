"""Scoring a state on a split: metrics, per-utterance predictions and their uncertainty.

Every utterance is scored on the windows of `config.evaluation` (emohrnet_jax.windows): by
default all of it, its windows' logits averaged as `predict` averages them, in batches of one
shape (`batch_size` windows of `num_frames`), so a run compiles one evaluation program whatever
its utterances' lengths. A final score carries, beside UA, WA and macro-F1, 95% intervals from a
bootstrap that resamples speakers (the independent unit), each speaker's UA, and the calibration
of the probabilities (ECE, Brier), at the temperature fitted on validation where the run has one.
The predictions of every utterance go to `predictions_<split>.jsonl`, one JSON object a line, in
the split's stored order: `{"id": str, "speaker": str, "label": int, "probabilities": [float,
...], "logits": [float or null, ...]}` (label, probabilities and the mean window logits, before
any temperature, index the run's `class_names`; null: a class left out of a cross-corpus mapping).
`target` is what `--mode=evaluate` scores.
"""

import dataclasses
import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from emohrnet_jax import calibration, metrics, statistics, steps, storage, windows
from emohrnet_jax.data import cross_corpus, pipeline, splits


@dataclasses.dataclass(frozen=True)
class Predictions:
    """The real examples of a split, in stored order: `utterances` (id, speaker, label), their
    `(N, classes)` probabilities and the mean window logits they came from (None when read from
    a file written before runs kept them)."""

    utterances: list[dict[str, Any]]
    probabilities: np.ndarray
    logits: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        return np.array([u["label"] for u in self.utterances], np.int64)

    @property
    def speakers(self) -> list[str]:
        return [u["speaker"] for u in self.utterances]

    def at_temperature(self, temperature: float) -> "Predictions":
        """These predictions with the probabilities of `logits / temperature`."""
        return dataclasses.replace(self, probabilities=windows.softmax(self.logits, temperature))


def evaluate(
    eval_step,
    state,
    fold: pipeline.FoldInput,
    split: str,
    batch_size: int,
    sharding,
    windowing: windows.Windowing,
) -> dict[str, Any]:
    """UA, WA, macro-F1, loss and confusion matrix over every example of `split`, once."""
    return _scan(eval_step, state, fold, split, batch_size, sharding, windowing)[0]


def evaluate_with_predictions(
    eval_step,
    state,
    fold: pipeline.FoldInput,
    split: str,
    batch_size: int,
    sharding,
    windowing: windows.Windowing,
) -> tuple[dict[str, Any], Predictions]:
    """`evaluate`, and the predictions of every example (on every host)."""
    summary, logits, labels = _scan(eval_step, state, fold, split, batch_size, sharding, windowing)
    utterances = fold.utterances(split)
    if [u["label"] for u in utterances] != labels.tolist():
        raise RuntimeError(f"the {split} windows do not follow the split's stored order")
    logging.info(
        "%s: %d utterances scored in %d windows (%s), batches of %d",
        split,
        len(utterances),
        summary["windows"],
        windowing.mode,
        batch_size,
    )
    return summary, Predictions(utterances, windows.softmax(logits), logits)


def _scan(eval_step, state, fold, split, batch_size, sharding, windowing):
    """The split's summary, and each utterance's mean window logits and label, in stored order."""
    logits, rows = [], []
    host, hosts = jax.process_index(), jax.process_count()
    for batch in fold.eval_batches(split, batch_size, windowing, host, hosts):
        logits.append(eval_step(state, steps.global_batch(batch, ("mel",), sharding))["logits"])
        # Placed as the batch was, so each global row's index names that row's utterance.
        rows.append(steps.global_batch(batch, ("index", "label"), sharding))
    if not rows:
        raise ValueError(f"the {split} split has no utterances")
    # Fetched once, after the last batch: a fetch per batch would wait for the device each time.
    gathered = multihost_utils.process_allgather(rows, tiled=True)
    index = np.concatenate([row["index"] for row in gathered])
    window_labels = np.concatenate([row["label"] for row in gathered])
    window_logits = np.concatenate(jax.device_get(logits)).astype(np.float64)
    real = index >= 0
    count = fold.count(split)
    per_utterance = np.bincount(index[real], minlength=count)
    if len(per_utterance) != count or not per_utterance.all():
        raise RuntimeError(f"the {split} batches do not cover each example")
    sums = np.zeros((count, window_logits.shape[1]))
    np.add.at(sums, index[real], window_logits[real])
    utterance_logits = sums / per_utterance[:, None]
    labels = np.zeros(count, np.int64)
    labels[index[real]] = window_labels[real]
    predicted = utterance_logits.argmax(axis=1)
    summary = metrics.summarize(
        metrics.confusion(labels, predicted, len(fold.class_names)), fold.class_names
    )
    summary["loss"] = calibration.negative_log_likelihood(utterance_logits, labels, 1.0)
    summary["windows"] = int(real.sum())
    return summary, utterance_logits, labels


def uncertainty(predictions: Predictions, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Speaker-bootstrap `ci95` of UA, WA and macro-F1 (`config.bootstrap_resamples` resamples
    drawn from `config.seed`), `per_speaker_ua`, `worst_speaker`, `ece` and `brier` of a split's
    predictions."""
    labels, speakers = predictions.labels, predictions.speakers
    num_classes = predictions.probabilities.shape[1]
    predicted = predictions.probabilities.argmax(axis=1)
    per_speaker = statistics.per_speaker_ua(labels, predicted, speakers, num_classes)
    worst = min(per_speaker, key=lambda speaker: (per_speaker[speaker], speaker))
    return {
        "ci95": statistics.speaker_bootstrap(
            labels,
            predicted,
            speakers,
            num_classes,
            resamples=config.bootstrap_resamples,
            seed=config.seed,
        ),
        "per_speaker_ua": per_speaker,
        "worst_speaker": {"speaker": worst, "ua": per_speaker[worst]},
        **statistics.calibration(labels, predictions.probabilities),
    }


def by_corpus(predictions: Predictions, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A mixture's split scored corpus by corpus (ids "corpus/id"): each corpus's UA, WA,
    macro-F1, confusion matrix and `uncertainty`, in the order the corpora come."""
    corpora = [u["id"].split("/", 1)[0] for u in predictions.utterances]
    num_classes = predictions.probabilities.shape[1]
    class_names = tuple(config.data.class_names)
    scored = {}
    for corpus in dict.fromkeys(corpora):
        rows = np.array([c == corpus for c in corpora])
        part = Predictions(
            [u for u, keep in zip(predictions.utterances, rows, strict=True) if keep],
            predictions.probabilities[rows],
            None if predictions.logits is None else predictions.logits[rows],
        )
        predicted = part.probabilities.argmax(axis=1)
        confusion = metrics.confusion(part.labels, predicted, num_classes)
        scored[corpus] = metrics.summarize(confusion, class_names) | uncertainty(part, config)
    return scored


def fingerprint(fold: pipeline.FoldInput) -> str:
    """`splits.split_fingerprint` of the fold's utterance ids."""
    return splits.split_fingerprint(
        {name: [u["id"] for u in fold.utterances(name)] for name in splits.SPLITS}
    )


def predictions_path(workdir: str, split: str) -> str:
    """Where a run keeps the predictions of `split`."""
    return os.path.join(workdir, f"predictions_{split}.jsonl")


def write_predictions(workdir: str, split: str, predictions: Predictions) -> None:
    """Writes `predictions_<split>.jsonl` (the module docstring's format), atomically."""
    lines = []
    for i, utterance in enumerate(predictions.utterances):
        row = {**utterance, "probabilities": [float(p) for p in predictions.probabilities[i]]}
        if predictions.logits is not None:  # JSON has no -inf: null marks a left-out class
            row["logits"] = [float(x) if math.isfinite(x) else None for x in predictions.logits[i]]
        lines.append(json.dumps(row))
    storage.write_bytes_atomically(
        predictions_path(workdir, split), "".join(line + "\n" for line in lines).encode()
    )


def read_predictions(workdir: str, split: str) -> Predictions:
    """The predictions that `write_predictions` wrote."""
    text = storage.read_text(predictions_path(workdir, split))
    rows = [json.loads(line) for line in text.splitlines()]
    logits = None
    if rows and all("logits" in row for row in rows):
        logits = np.array(
            [[-np.inf if x is None else x for x in row["logits"]] for row in rows], np.float64
        )
    return Predictions(
        [{k: row[k] for k in pipeline.UTTERANCE_KEYS} for row in rows],
        np.array([row["probabilities"] for row in rows], np.float32),
        logits,
    )


def with_uncertainty(
    summary: dict[str, Any],
    predictions: Predictions,
    config: ml_collections.ConfigDict,
    temperature: float = 1.0,
    corpora: bool = False,
) -> tuple[dict[str, Any], Predictions]:
    """A split's summary with the `uncertainty` of its predictions at `temperature`, and those
    predictions; another temperature than 1 keeps the ECE and Brier score before it as
    `uncalibrated`; a mixture's (`corpora`) has each corpus's scores as `per_corpus`."""
    scaled = predictions.at_temperature(temperature)
    summary = summary | uncertainty(scaled, config)
    if temperature != 1.0:
        summary["uncalibrated"] = statistics.calibration(
            predictions.labels, predictions.probabilities
        )
    if corpora:
        summary["per_corpus"] = by_corpus(scaled, config)
    return summary, scaled


@dataclasses.dataclass(frozen=True)
class Target:
    """What `--mode=evaluate` scores: a split of `fold`, under `name`."""

    fold: pipeline.FoldInput
    name: str
    # Another corpus's: the run's classes its labels map to, and the result's extra fields
    # (dataset, label_map, left_out).
    classes: tuple[int, ...] | None = None
    corpus: dict[str, Any] = dataclasses.field(default_factory=dict)


def target(config: ml_collections.ConfigDict, split: str) -> Target:
    """The training corpus's fold, or with `config.cross_corpus.dataset` that corpus's."""
    corpus = config.cross_corpus.dataset
    if corpus:
        fold, mapping, left_out = cross_corpus.create_input(config, split)
        classes = tuple(sorted({fold.class_names.index(ours) for ours in mapping.values()}))
        about = {"dataset": corpus, "label_map": mapping, "left_out": left_out}
        return Target(fold, f"{corpus}_{split}", classes, about)
    if split == "all":
        raise ValueError(
            "--split=all scores every speaker, training speakers included: it is only meaningful "
            "for another corpus (set config.cross_corpus.dataset)"
        )
    return Target(pipeline.create_fold_input(config), split)
