"""Uncertainty of test scores: speaker bootstrap, per-speaker UA, calibration, paired comparison.

Speakers, not utterances, are the independent unit of a speaker-independent test split (one
speaker's utterances share a voice, a microphone and often sentences), so the bootstrap and the
permutation test resample or swap whole speakers. Pure numpy: each speaker's confusion matrix is
counted once, and a resample is a weighted sum of them, so 1,000 resamples take milliseconds.

UA and macro-F1 are computed as `emohrnet_jax.metrics.summarize` computes them: a class with no
true utterances (in the data, or in a resample that drew none of its speakers) is left out of
the mean, and the F1 of a present class that is never predicted is 0.
"""

from collections.abc import Sequence

import numpy as np

# Lower and upper percentiles of a two-sided 95% percentile interval.
_PERCENTILES = (2.5, 97.5)
# |d*| >= |d| up to float rounding: the same confusion counts summed in another order.
_TIE = 1e-12


def _check(
    labels: Sequence[int],
    predictions: Sequence[int] | np.ndarray,
    speakers: Sequence,
    num_classes: int,
    systems: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inputs as arrays (speakers as strings), or ValueError saying what is wrong.

    With `systems`, `predictions` may be `(S, N)`: S systems (say, seeds) over the same N
    utterances; it is returned as `(S, N)` either way (`(1, N)` for `(N,)`).
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    speakers = np.asarray(speakers).astype(str)
    if labels.ndim != 1 or speakers.ndim != 1:
        raise ValueError("labels and speakers must be one-dimensional")
    if predictions.ndim != 1 and not (systems and predictions.ndim == 2):
        shapes = "(N,) or (systems, N)" if systems else "(N,)"
        raise ValueError(f"predictions must be {shapes}, got shape {predictions.shape}")
    predictions = np.atleast_2d(predictions)
    if not len(labels) == predictions.shape[1] == len(speakers):
        raise ValueError(
            f"lengths differ: {len(labels)} labels, {predictions.shape[1]} predictions, "
            f"{len(speakers)} speakers"
        )
    if len(labels) == 0 or len(predictions) == 0:
        raise ValueError("no utterances to score")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must be integer class indices, got dtype {values.dtype}")
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got {values.min()}..{values.max()}"
            )
    return labels.astype(np.int64), predictions.astype(np.int64), speakers


def _speaker_confusions(
    labels: np.ndarray,
    predictions: np.ndarray,
    speaker_index: np.ndarray,
    num_speakers: int,
    num_classes: int,
) -> np.ndarray:
    """`(systems, num_speakers, classes, classes)` confusion counts of each system's speakers
    (rows = true class), from `(systems, N)` predictions."""
    systems = len(predictions)
    confusions = np.zeros((systems, num_speakers, num_classes, num_classes), np.int64)
    system_index = np.repeat(np.arange(systems), len(labels))
    np.add.at(
        confusions,
        (
            system_index,
            np.tile(speaker_index, systems),
            np.tile(labels, systems),
            predictions.ravel(),
        ),
        1,
    )
    return confusions


def _resampled(weights: np.ndarray, confusions: np.ndarray) -> np.ndarray:
    """`(systems, resamples, C, C)`: each system's confusion counts under each `(resamples,
    speakers)` weighting of its speakers (the same weights for every system)."""
    return np.einsum("rk,skij->srij", weights, confusions)


def _scores(confusions: np.ndarray) -> dict[str, np.ndarray]:
    """UA, WA and macro-F1 of each `(..., C, C)` confusion matrix, as metrics.summarize."""
    hits = np.diagonal(confusions, axis1=-2, axis2=-1).astype(np.float64)
    true_count = confusions.sum(axis=-1)
    predicted_count = confusions.sum(axis=-2)
    present = true_count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, hits / true_count, 0.0)
        f1 = np.where(present, 2.0 * hits / (true_count + predicted_count), 0.0)
        classes = present.sum(axis=-1)
        return {
            "ua": recall.sum(axis=-1) / classes,
            "wa": hits.sum(axis=-1) / true_count.sum(axis=-1),
            "macro_f1": f1.sum(axis=-1) / classes,
        }


def _draws(rng: np.random.Generator, num_speakers: int, resamples: int) -> np.ndarray:
    """`(resamples, num_speakers)` how often each speaker is drawn (with replacement)."""
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    drawn = rng.integers(0, num_speakers, size=(resamples, num_speakers))
    offsets = np.arange(resamples)[:, None] * num_speakers
    counts = np.bincount((drawn + offsets).ravel(), minlength=resamples * num_speakers)
    return counts.reshape(resamples, num_speakers)


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, _PERCENTILES)
    return [float(low), float(high)]


def speaker_bootstrap(
    labels: Sequence[int],
    predictions: Sequence[int] | np.ndarray,
    speakers: Sequence,
    num_classes: int,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, list[float]]:
    """95% percentile intervals of UA, WA and macro-F1 from resampling speakers.

    Each resample draws as many speakers as there are, with replacement; every utterance of a
    drawn speaker enters, once per draw. A class none of whose utterances is drawn is left out
    of that resample's UA and macro-F1 (as `metrics.summarize` leaves out an absent class).
    With several systems (say, one model trained with several seeds), a resample's score is the
    mean over systems of each system's score on the same drawn speakers.

    Args:
      labels: `(N,)` true class indices.
      predictions: `(N,)` predicted class indices, or `(S, N)`: S systems' predictions.
      speakers: `(N,)` the speaker of each utterance (any values; compared as strings).
      num_classes: the number of classes.
      resamples: bootstrap resamples.
      seed: of the numpy Generator; the same seed gives the same intervals.

    Returns:
      {"ua": [low, high], "wa": [low, high], "macro_f1": [low, high]}.

    Raises:
      ValueError: inputs of different lengths, empty, or class indices out of range.
    """
    labels, predictions, speakers = _check(labels, predictions, speakers, num_classes, True)
    names, index = np.unique(speakers, return_inverse=True)
    confusions = _speaker_confusions(labels, predictions, index, len(names), num_classes)
    weights = _draws(np.random.default_rng(seed), len(names), resamples)
    scores = _scores(_resampled(weights, confusions))
    return {name: _interval(values.mean(axis=0)) for name, values in scores.items()}


def scores(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> dict[str, float]:
    """UA, WA and macro-F1 of all the utterances, as `metrics.summarize` computes them."""
    labels, predictions, _ = _check(labels, predictions, np.zeros(len(labels)), num_classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predictions[0]), 1)
    return {name: float(value) for name, value in _scores(confusion).items()}


def per_speaker_ua(
    labels: Sequence[int], predictions: Sequence[int], speakers: Sequence, num_classes: int
) -> dict[str, float]:
    """Each speaker's UA over the classes that speaker has utterances of (speakers sorted)."""
    labels, predictions, speakers = _check(labels, predictions, speakers, num_classes)
    names, index = np.unique(speakers, return_inverse=True)
    confusions = _speaker_confusions(labels, predictions, index, len(names), num_classes)
    ua = _scores(confusions[0])["ua"]
    return {str(name): float(value) for name, value in zip(names, ua, strict=True)}


def calibration(
    labels: Sequence[int], probabilities: np.ndarray, bins: int = 15
) -> dict[str, float]:
    """Expected calibration error of the top-class confidence, and the multi-class Brier score.

    ECE: the utterances are put in `bins` equal-width confidence bins ((0, 1/bins], ...; a
    confidence of 0 goes in the first), and the gaps |accuracy - mean confidence| of the bins
    are averaged weighted by their share of utterances. Brier: the mean over utterances of the
    squared distance between the probability vector and the one-hot label (0 to 2).

    Raises:
      ValueError: shapes that disagree, no utterances, non-finite probabilities, labels out of
        range, or bins < 1.
    """
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(
            f"need (N,) labels and (N, classes) probabilities, got {labels.shape} and "
            f"{probabilities.shape}"
        )
    if len(labels) == 0:
        raise ValueError("no utterances to score")
    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities must be finite")
    num_classes = probabilities.shape[1]
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise ValueError(f"labels must be integer class indices in [0, {num_classes})")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bin_of = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(bin_of, minlength=bins)
    gap = np.abs(
        np.bincount(bin_of, weights=correct, minlength=bins)
        - np.bincount(bin_of, weights=confidence, minlength=bins)
    )
    one_hot = np.eye(num_classes)[labels]
    return {
        "ece": float(gap.sum() / count.sum()),
        "brier": float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1))),
    }


def paired_comparison(
    labels: Sequence[int],
    predictions_a: Sequence[int] | np.ndarray,
    predictions_b: Sequence[int] | np.ndarray,
    speakers: Sequence,
    num_classes: int,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """UA(a) - UA(b) on the same utterances, its speaker-bootstrap CI and a permutation p-value.

    The interval resamples speakers as `speaker_bootstrap` does, the same speakers for both
    systems. The two-sided paired permutation test swaps, in each resample, the two systems'
    predictions of each speaker independently with probability 1/2; p = (1 + #{|d*| >= |d|}) /
    (1 + resamples), so it is never 0 and identical systems get p = 1. With S speakers there
    are 2^S swaps, so p cannot go below about 2 / 2^S however many resamples.

    `(S, N)` predictions compare S pairs (a's i-th system, say seed, against b's i-th): the
    statistic is the mean over pairs of the UA difference; a resample draws the same speakers
    for every pair, and a swap exchanges a speaker's predictions in every pair together.

    Returns:
      {"ua_difference", "ua_difference_ci95": [low, high], "p_value", "num_utterances",
      "num_speakers", "resamples", "seed"}.

    Raises:
      ValueError: inputs of different lengths or numbers of systems, empty, or class indices
        out of range.
    """
    shape_a, shape_b = np.shape(predictions_a), np.shape(predictions_b)
    if shape_a != shape_b:
        raise ValueError(
            f"the systems' predictions differ in length: {' x '.join(map(str, shape_a))} and "
            f"{' x '.join(map(str, shape_b))}"
        )
    labels, predictions_a, speakers = _check(labels, predictions_a, speakers, num_classes, True)
    _, predictions_b, _ = _check(labels, predictions_b, speakers, num_classes, True)
    names, index = np.unique(speakers, return_inverse=True)
    confusions_a = _speaker_confusions(labels, predictions_a, index, len(names), num_classes)
    confusions_b = _speaker_confusions(labels, predictions_b, index, len(names), num_classes)

    def mean_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The mean over system pairs of UA(a) - UA(b), from `(systems, ..., C, C)` counts."""
        return (_scores(a)["ua"] - _scores(b)["ua"]).mean(axis=0)

    difference = float(mean_difference(confusions_a.sum(axis=1), confusions_b.sum(axis=1)))
    rng = np.random.default_rng(seed)
    weights = _draws(rng, len(names), resamples)
    bootstrap = mean_difference(
        _resampled(weights, confusions_a), _resampled(weights, confusions_b)
    )
    swapped = (rng.random((resamples, len(names))) < 0.5).astype(np.int64)
    kept = 1 - swapped
    permuted = mean_difference(
        _resampled(kept, confusions_a) + _resampled(swapped, confusions_b),
        _resampled(swapped, confusions_a) + _resampled(kept, confusions_b),
    )
    extreme = int(np.sum(np.abs(permuted) >= abs(difference) - _TIE))
    return {
        "ua_difference": difference,
        "ua_difference_ci95": _interval(bootstrap),
        "p_value": (1 + extreme) / (1 + resamples),
        "num_utterances": len(labels),
        "num_speakers": len(names),
        "resamples": int(resamples),
        "seed": int(seed),
    }
