"""Scoring a state on a split: metrics, per-utterance predictions and their uncertainty.

Every split is scored on its centre crops (`EVALUATION`). A final score carries, beside UA, WA
and macro-F1, 95% intervals from a bootstrap that resamples speakers (the independent unit),
each speaker's UA, and the calibration of the probabilities (ECE, Brier). The predictions of every
utterance go to `predictions_<split>.jsonl`, one JSON object a line, in the split's stored order:
`{"id": str, "speaker": str, "label": int, "probabilities": [float, ...]}` (label and
probabilities index the run's `class_names`). `target` is what `--mode=evaluate` scores.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from emohrnet_jax import metrics, statistics, steps, storage
from emohrnet_jax.data import pipeline, splits

EVAL_KEYS = ("mel", "label", "mask")
# What results.json's "evaluation" says: the centre `num_frames` crop of each utterance.
EVALUATION = "centre_crop"
SUM_KEYS = ("loss_sum", "count", "confusion")


@dataclasses.dataclass(frozen=True)
class Predictions:
    """The real examples of a split, in stored order: `utterances` (id, speaker, label) and
    their `(N, classes)` probabilities."""

    utterances: list[dict[str, Any]]
    probabilities: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return np.array([u["label"] for u in self.utterances], np.int64)

    @property
    def speakers(self) -> list[str]:
        return [u["speaker"] for u in self.utterances]


def evaluate(
    eval_step, state, fold: pipeline.FoldInput, split: str, batch_size: int, sharding
) -> dict[str, Any]:
    """UA, WA, macro-F1, loss and confusion matrix over every example of `split`, once."""
    return _scan(eval_step, state, fold, split, batch_size, sharding, keep=False)[0]


def evaluate_with_predictions(
    eval_step, state, fold: pipeline.FoldInput, split: str, batch_size: int, sharding
) -> tuple[dict[str, Any], Predictions]:
    """`evaluate`, and the probabilities of every example (on every host)."""
    summary, probabilities = _scan(eval_step, state, fold, split, batch_size, sharding, keep=True)
    return summary, Predictions(fold.utterances(split), probabilities)


def _scan(eval_step, state, fold, split, batch_size, sharding, keep: bool):
    """The split's summary, and (`keep`) its probabilities in stored order."""
    totals, probabilities, indices = None, [], []
    for batch in fold.eval_batches(split, batch_size, jax.process_index(), jax.process_count()):
        out = eval_step(state, steps.global_batch(batch, EVAL_KEYS, sharding))
        sums = {k: out[k] for k in SUM_KEYS}
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
        if keep:
            probabilities.append(out["probabilities"])
            # Placed as the batch was, so each global row's index names that row's example.
            indices.append(steps.global_batch(batch, ("index",), sharding)["index"])
    totals = jax.device_get(totals)
    summary = metrics.summarize(np.asarray(totals["confusion"]), fold.class_names)
    summary["loss"] = float(totals["loss_sum"] / max(int(totals["count"]), 1))
    if not keep:
        return summary, None
    # Fetched once, after the last batch: a fetch per batch would wait for the device each time.
    index = np.concatenate(multihost_utils.process_allgather(indices, tiled=True))
    rows = np.concatenate(jax.device_get(probabilities))
    real = index >= 0
    if sorted(index[real].tolist()) != list(range(summary["num_examples"])):
        raise RuntimeError(f"the {split} batches do not cover each example once")
    stored = np.empty((summary["num_examples"], rows.shape[1]), np.float32)
    stored[index[real]] = rows[real]
    return summary, stored


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
    lines = [
        json.dumps({**utterance, "probabilities": [float(p) for p in row]})
        for utterance, row in zip(predictions.utterances, predictions.probabilities, strict=True)
    ]
    storage.write_bytes_atomically(
        predictions_path(workdir, split), "".join(line + "\n" for line in lines).encode()
    )


def read_predictions(workdir: str, split: str) -> Predictions:
    """The predictions that `write_predictions` wrote."""
    text = storage.read_text(predictions_path(workdir, split))
    rows = [json.loads(line) for line in text.splitlines()]
    return Predictions(
        [{k: row[k] for k in pipeline.UTTERANCE_KEYS} for row in rows],
        np.array([row["probabilities"] for row in rows], np.float32),
    )


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
        fold, mapping, left_out = pipeline.create_cross_corpus_input(config, split)
        classes = tuple(sorted({fold.class_names.index(ours) for ours in mapping.values()}))
        about = {"dataset": corpus, "label_map": mapping, "left_out": left_out}
        return Target(fold, f"{corpus}_{split}", classes, about)
    if split == "all":
        raise ValueError(
            "--split=all scores every speaker, training speakers included: it is only meaningful "
            "for another corpus (set config.cross_corpus.dataset)"
        )
    return Target(pipeline.create_fold_input(config), split)
