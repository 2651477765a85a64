"""Tests of the speaker bootstrap, per-speaker UA, calibration and the paired comparison."""

import numpy as np
import pytest

from emohrnet_jax import metrics, statistics

# Speaker "a" has classes 0 and 1 (recall 1/2 and 1: UA 3/4, WA 2/3); speaker "b" classes 1 and 2
# (recall 0 and 1/2: UA 1/4, WA 1/3); both together: every recall 1/2.
LABELS = [0, 0, 1, 1, 2, 2]
PREDICTIONS = [0, 1, 1, 0, 2, 0]
SPEAKERS = ["a", "a", "a", "b", "b", "b"]


def _summary(labels, predictions, num_classes):
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (np.asarray(labels), np.asarray(predictions)), 1)
    return metrics.summarize(confusion, [str(c) for c in range(num_classes)])


def _random_case(seed, speakers=20, per_speaker=10, num_classes=4, accuracy=0.7):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, speakers * per_speaker)
    wrong = rng.random(len(labels)) > accuracy
    predictions = np.where(wrong, rng.integers(0, num_classes, len(labels)), labels)
    return labels, predictions, np.repeat([f"s{i:02d}" for i in range(speakers)], per_speaker)


def test_bootstrap_of_two_speakers_spans_the_single_speaker_scores():
    # A resample is {a, a}, {a, b} or {b, b} (probability 1/4, 1/2, 1/4), so the 2.5th and 97.5th
    # percentiles are the scores of one speaker drawn twice; "a" alone has no class 2, which is
    # left out of its UA (3/4, not 1/2).
    result = statistics.speaker_bootstrap(LABELS, PREDICTIONS, SPEAKERS, 3)
    np.testing.assert_allclose(result["ua"], [0.25, 0.75])
    np.testing.assert_allclose(result["wa"], [1 / 3, 2 / 3])
    # macro-F1 of "b" twice: class 1 F1 0, class 2 F1 2*2/(4+2); "a" twice: 2*2/(4+2), 2*2/(2+4).
    np.testing.assert_allclose(result["macro_f1"], [1 / 3, 2 / 3])


def test_bootstrap_equals_a_direct_resampling_of_speakers():
    labels, predictions, speakers = _random_case(1, speakers=5, per_speaker=6)
    names = np.unique(speakers)
    drawn = np.random.default_rng(7).integers(0, len(names), size=(200, len(names)))
    scores = {"ua": [], "wa": [], "macro_f1": []}
    for draw in drawn:
        # A speaker drawn twice brings its utterances twice.
        rows = np.concatenate([np.flatnonzero(speakers == names[s]) for s in draw])
        summary = _summary(labels[rows], predictions[rows], 4)
        for name, values in scores.items():
            values.append(summary[name])
    result = statistics.speaker_bootstrap(labels, predictions, speakers, 4, resamples=200, seed=7)
    for name, values in scores.items():
        np.testing.assert_allclose(result[name], np.percentile(values, [2.5, 97.5]))


def test_bootstrap_is_deterministic_for_a_seed():
    case = _random_case(2)
    first = statistics.speaker_bootstrap(*case, 4, seed=3)
    assert statistics.speaker_bootstrap(*case, 4, seed=3) == first
    assert statistics.speaker_bootstrap(*case, 4, seed=4) != first


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intervals_contain_the_point_estimate(seed):
    labels, predictions, speakers = _random_case(seed)
    point = _summary(labels, predictions, 4)
    result = statistics.speaker_bootstrap(labels, predictions, speakers, 4, seed=seed)
    for name in ("ua", "wa", "macro_f1"):
        low, high = result[name]
        assert low <= point[name] <= high and low < high


def test_per_speaker_ua_by_hand():
    assert statistics.per_speaker_ua(LABELS, PREDICTIONS, SPEAKERS, 3) == {"a": 0.75, "b": 0.25}
    # Speakers that are numbers become strings.
    assert statistics.per_speaker_ua([0, 1], [0, 0], [7, 8], 2) == {"7": 1.0, "8": 0.0}


def test_calibration_by_hand():
    probabilities = [[0.95, 0.05], [0.65, 0.35], [0.25, 0.75], [0.15, 0.85]]
    labels = [0, 1, 1, 0]  # right, wrong, right, wrong
    # 10 bins: each utterance alone in its bin, gaps 0.05, 0.65, 0.25, 0.85.
    result = statistics.calibration(labels, probabilities, bins=10)
    assert result["ece"] == pytest.approx(0.45)
    # Squared distances to the one-hot labels: 0.005, 0.845, 0.125, 1.445.
    assert result["brier"] == pytest.approx(0.605)
    # 2 bins: all in (0.5, 1], accuracy 0.5 against mean confidence 0.8.
    assert statistics.calibration(labels, probabilities, bins=2)["ece"] == pytest.approx(0.3)


def test_identical_systems_differ_by_zero_with_p_one():
    labels, predictions, speakers = _random_case(5)
    result = statistics.paired_comparison(labels, predictions, predictions, speakers, 4)
    assert result["ua_difference"] == 0.0
    assert result["ua_difference_ci95"] == [0.0, 0.0]
    assert result["p_value"] == 1.0
    assert result["num_utterances"] == 200 and result["num_speakers"] == 20
    assert (result["resamples"], result["seed"]) == (1000, 0)


def test_a_system_right_where_the_other_is_wrong_gets_a_small_p():
    labels, _, speakers = _random_case(6, speakers=12, num_classes=2)
    result = statistics.paired_comparison(labels, labels, 1 - labels, speakers, 2, seed=1)
    assert result["ua_difference"] == 1.0
    assert result["ua_difference_ci95"] == [1.0, 1.0]
    assert result["p_value"] < 0.01
    # The test is two-sided: swapping the systems flips the sign, not p.
    flipped = statistics.paired_comparison(labels, 1 - labels, labels, speakers, 2, seed=1)
    assert flipped["ua_difference"] == -1.0 and flipped["p_value"] == result["p_value"]


def test_paired_comparison_is_deterministic_for_a_seed():
    labels, predictions, speakers = _random_case(7)
    _, other, _ = _random_case(8)
    first = statistics.paired_comparison(labels, predictions, other, speakers, 4, seed=2)
    assert statistics.paired_comparison(labels, predictions, other, speakers, 4, seed=2) == first
    low, high = first["ua_difference_ci95"]
    assert low <= first["ua_difference"] <= high
    assert 0 < first["p_value"] <= 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: statistics.speaker_bootstrap([0, 1], [0], ["a", "b"], 2), "lengths differ"),
        (lambda: statistics.speaker_bootstrap([], [], [], 2), "no utterances"),
        (lambda: statistics.speaker_bootstrap([0, 2], [0, 1], ["a", "b"], 2), r"\[0, 2\)"),
        (lambda: statistics.speaker_bootstrap([0], [0], ["a"], 2, resamples=0), "resamples"),
        (lambda: statistics.per_speaker_ua([0], [0.5], ["a"], 2), "integer"),
        (lambda: statistics.paired_comparison([0], [0], [0, 1], ["a"], 2), "differ in length"),
        (lambda: statistics.calibration([0, 1], [[1.0, 0.0]]), "need"),
        (lambda: statistics.calibration([], np.zeros((0, 2))), "no utterances"),
        (lambda: statistics.calibration([2], [[0.5, 0.5]]), "labels"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_scores_equal_metrics_summarize():
    labels, predictions, _ = _random_case(9)
    summary = _summary(labels, predictions, 4)
    result = statistics.scores(labels, predictions, 4)
    for name in ("ua", "wa", "macro_f1"):
        assert result[name] == pytest.approx(summary[name])


def test_bootstrap_of_two_seeds_averages_each_resample_over_seeds():
    # Seed 0 as PREDICTIONS ("a": UA 3/4, "b": 1/4); seed 1 right on every utterance of "a" and
    # wrong on "b" (UA 1 and 0). The extreme resamples, {b, b} and {a, a}, score (1/4 + 0) / 2
    # and (3/4 + 1) / 2.
    seed_1 = [0, 0, 1, 0, 0, 0]
    result = statistics.speaker_bootstrap(LABELS, [PREDICTIONS, seed_1], SPEAKERS, 3)
    np.testing.assert_allclose(result["ua"], [0.125, 0.875])
    # One system given as (1, N) is the same as (N,).
    one = statistics.speaker_bootstrap(LABELS, [PREDICTIONS], SPEAKERS, 3)
    assert one == statistics.speaker_bootstrap(LABELS, PREDICTIONS, SPEAKERS, 3)


def test_paired_comparison_of_two_seeds_by_hand():
    # Pooled UA of seed 0 as PREDICTIONS: 1/2; of seed 1: class recalls 1, 1/2, 0 -> 1/2; of the
    # always-right system: 1. The statistic is the mean of the pairs' differences, -1/2.
    seeds = np.array([PREDICTIONS, [0, 0, 1, 0, 0, 0]])
    right = np.array([LABELS, LABELS])
    result = statistics.paired_comparison(LABELS, seeds, right, SPEAKERS, 3)
    assert result["ua_difference"] == -0.5
    # Resample {a, a}: classes 0, 1 only; seed 0 UA 3/4, seed 1 UA 1 -> mean difference -1/8.
    # {b, b}: classes 1, 2; seed 0 UA 1/4, seed 1 UA 0 -> -7/8.
    np.testing.assert_allclose(result["ua_difference_ci95"], [-0.875, -0.125])
    # Two speakers, 4 swaps: none (-1/2), both (+1/2), "a" alone (seed 0: 2/3 - 5/6, seed 1:
    # 1/2 - 1: mean -1/3) and "b" alone (+1/3); half reach |d| = 1/2, so p is near 1/2.
    assert 0.4 < result["p_value"] < 0.6
    assert (result["num_utterances"], result["num_speakers"]) == (6, 2)


def test_identical_systems_over_seeds_differ_by_zero_with_p_one():
    labels, predictions, speakers = _random_case(10)
    _, other, _ = _random_case(11)
    seeds = np.stack([predictions, other])
    result = statistics.paired_comparison(labels, seeds, seeds, speakers, 4)
    assert (result["ua_difference"], result["ua_difference_ci95"]) == (0.0, [0.0, 0.0])
    assert result["p_value"] == 1.0


def test_a_single_seed_pair_is_the_plain_comparison():
    labels, predictions, speakers = _random_case(12)
    _, other, _ = _random_case(13)
    plain = statistics.paired_comparison(labels, predictions, other, speakers, 4, seed=5)
    assert (
        statistics.paired_comparison(labels, [predictions], [other], speakers, 4, seed=5) == plain
    )


def test_different_numbers_of_seeds_are_refused():
    labels, predictions, speakers = _random_case(14)
    with pytest.raises(ValueError, match=r"differ in length: 2 x 200 and 1 x 200"):
        statistics.paired_comparison(labels, [predictions, predictions], [predictions], speakers, 4)
    with pytest.raises(ValueError, match=r"predictions must be \(N,\)"):
        statistics.per_speaker_ua(labels, [predictions], speakers, 4)
