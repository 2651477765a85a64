"""Tests of the metrics: confusion counts and UA/WA/macro-F1."""

import json
import subprocess
import sys
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from emohrnet_jax import metrics

NAMES3 = ["angry", "happy", "sad"]


# ---------------------------------------------------------------- confusion


def test_confusion_hand_computed():
    counts = metrics.confusion([0, 0, 1, 2, 2, 1], [0, 1, 1, 2, 0, 1], 3)
    assert counts.shape == (3, 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_confusion_of_nothing_is_zero():
    np.testing.assert_array_equal(metrics.confusion([], [], 3), np.zeros((3, 3)))


def test_confusion_matches_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    labels, predicted = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    expected = skm.confusion_matrix(labels, predicted, labels=range(7))
    np.testing.assert_array_equal(metrics.confusion(labels, predicted, 7), expected)


@pytest.mark.parametrize(
    ("labels", "predicted", "message"),
    [([0, 1], [0], "disagree"), ([0, 3], [0, 1], "labels outside"), ([0], [-1], "predicted")],
)
def test_confusion_rejects_bad_input(labels, predicted, message):
    with pytest.raises(ValueError, match=message):
        metrics.confusion(labels, predicted, 3)


# ---------------------------------------------------------------- summarize


def test_summarize_balanced():
    confusion = np.array([[2, 0, 0], [1, 1, 0], [0, 1, 1]])
    summary = metrics.summarize(confusion, NAMES3)
    # Recalls 1, 1/2, 1/2; F1 = 2TP / (true + predicted) = 4/5, 2/4, 2/3.
    assert summary["ua"] == pytest.approx(2 / 3)
    assert summary["wa"] == pytest.approx(4 / 6)
    assert summary["macro_f1"] == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert summary["per_class_recall"] == pytest.approx({"angry": 1.0, "happy": 0.5, "sad": 0.5})
    assert summary["confusion_matrix"] == confusion.tolist()
    assert summary["num_examples"] == 6


def test_summarize_imbalanced_ua_differs_from_wa():
    summary = metrics.summarize(np.array([[8, 2], [1, 1]]), ["neutral", "angry"])
    assert summary["wa"] == pytest.approx(9 / 12)
    assert summary["ua"] == pytest.approx((8 / 10 + 1 / 2) / 2)
    assert summary["macro_f1"] == pytest.approx((16 / 19 + 2 / 5) / 2)
    assert summary["ua"] != pytest.approx(summary["wa"])


def test_summarize_absent_class_and_never_predicted_class():
    # "happy" is never predicted; "sad" has no true examples but is predicted once.
    confusion = np.array([[3, 0, 1], [2, 0, 0], [0, 0, 0]])
    summary = metrics.summarize(confusion, NAMES3)
    assert summary["per_class_recall"] == {"angry": 0.75, "happy": 0.0, "sad": None}
    assert summary["ua"] == pytest.approx((0.75 + 0.0) / 2)
    assert summary["wa"] == pytest.approx(3 / 6)
    # F1 angry = 6 / (4 + 5); F1 happy = 0; sad is left out.
    assert summary["macro_f1"] == pytest.approx((6 / 9 + 0.0) / 2)


def test_summarize_is_plain_json():
    summary = metrics.summarize(jnp.array([[2, 1], [0, 3]], jnp.int32), ["a", "b"])
    assert json.loads(json.dumps(summary)) == summary
    assert type(summary["ua"]) is float and type(summary["num_examples"]) is int
    assert all(type(v) is int for row in summary["confusion_matrix"] for v in row)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_summarize_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_classes, n = 6, int(rng.integers(20, 400))
    # Skewed class frequencies, and class 4 never occurs as a true label.
    labels = rng.choice([0, 1, 2, 3, 5], size=n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    predicted = np.where(rng.random(n) < 0.6, labels, rng.integers(0, num_classes, n))
    confusion = skm.confusion_matrix(labels, predicted, labels=range(num_classes))
    summary = metrics.summarize(confusion, [f"c{i}" for i in range(num_classes)])

    present = sorted(set(labels.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a present class is never predicted
        ua = skm.recall_score(labels, predicted, labels=present, average="macro")
        f1 = skm.f1_score(labels, predicted, labels=present, average="macro", zero_division=0)
    assert summary["ua"] == pytest.approx(ua)
    assert summary["wa"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert summary["macro_f1"] == pytest.approx(f1)
    recalls = skm.recall_score(labels, predicted, labels=present, average=None)
    for c, r in zip(present, recalls, strict=True):
        assert summary["per_class_recall"][f"c{c}"] == pytest.approx(r)
    assert summary["per_class_recall"]["c4"] is None


@pytest.mark.parametrize(
    ("confusion", "names"),
    [
        (np.zeros((2, 3), int), ["a", "b"]),  # not square
        (np.ones((3, 3), int), ["a", "b"]),  # names do not match
        (np.ones(3, int), ["a", "b", "c"]),  # not a matrix
        (np.zeros((0, 0), int), []),  # no classes
        (np.zeros((2, 2), int), ["a", "b"]),  # no examples
        (np.array([[1, -1], [0, 1]]), ["a", "b"]),  # negative count
        (np.array([[1.5, 0], [0, 1]]), ["a", "b"]),  # fractional count
        (np.ones((2, 2), int), ["a", "a"]),  # duplicate names
    ],
)
def test_summarize_rejects_bad_input(confusion, names):
    with pytest.raises(ValueError):
        metrics.summarize(confusion, names)


# ---------------------------------------------------------------- dependencies


@pytest.mark.slow
def test_imports_without_tensorflow():
    # A None entry in sys.modules makes any `import tensorflow` raise ImportError.
    code = "import sys; sys.modules['tensorflow'] = None; import emohrnet_jax.metrics"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
