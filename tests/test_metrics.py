"""Tests of the metrics: confusion counts (eager and jitted) and UA/WA/macro-F1."""

import json
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from emohrnet_jax import metrics

NAMES3 = ["angry", "happy", "sad"]


def _logits_for(predicted, num_classes):
    """Logits whose argmax is `predicted`, with distractor scores so the argmax is not trivial."""
    predicted = np.asarray(predicted)
    logits = np.random.default_rng(0).uniform(-1.0, 1.0, (*predicted.shape, num_classes))
    np.put_along_axis(logits, predicted[..., None], 5.0, axis=-1)
    return jnp.asarray(logits, dtype=jnp.float32)


# ---------------------------------------------------------------- confusion_counts


def test_confusion_counts_hand_computed():
    labels = jnp.array([0, 0, 1, 2, 2, 1])
    predicted = [0, 1, 1, 2, 0, 1]
    counts = metrics.confusion_counts(_logits_for(predicted, 3), labels, jnp.ones(6, bool), 3)
    chex.assert_shape(counts, (3, 3))
    assert counts.dtype == jnp.int32
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_confusion_counts_skips_masked_examples():
    labels = jnp.array([0, 0, 1, 2, 2, 1])
    predicted = [0, 1, 1, 2, 0, 1]
    mask = jnp.array([True, False, True, True, False, False])
    counts = metrics.confusion_counts(_logits_for(predicted, 3), labels, mask, 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_confusion_counts_all_masked_is_zero():
    counts = metrics.confusion_counts(
        _logits_for([0, 1], 3), jnp.array([2, 2]), jnp.zeros(2, bool), 3
    )
    np.testing.assert_array_equal(counts, np.zeros((3, 3)))


def test_confusion_counts_under_jit_with_leading_batch_dims():
    # (devices, per-device batch) as an eval step would see it.
    labels = jnp.array([[0, 1, 1], [3, 3, 2]])
    predicted = [[0, 1, 0], [3, 2, 2]]
    mask = jnp.array([[True, True, True], [True, True, False]])
    step = jax.jit(metrics.confusion_counts, static_argnums=3)
    counts = step(_logits_for(predicted, 4), labels, mask, 4)
    expected = np.zeros((4, 4), int)
    for t, p, m in zip(np.ravel(labels), np.ravel(predicted), np.ravel(mask), strict=True):
        expected[t, p] += m
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == jnp.int32


def test_confusion_counts_matches_numpy_on_random_data():
    rng = np.random.default_rng(1)
    labels, predicted = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    mask = rng.random(500) < 0.8
    counts = jax.jit(metrics.confusion_counts, static_argnums=3)(
        _logits_for(predicted, 7), jnp.asarray(labels), jnp.asarray(mask), 7
    )
    expected = skm.confusion_matrix(labels[mask], predicted[mask], labels=range(7))
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize(
    ("logits_shape", "labels_shape", "mask_shape", "num_classes"),
    [((4, 3), (4,), (4,), 5), ((4, 3), (5,), (5,), 3), ((4, 3), (4,), (3,), 3)],
)
def test_confusion_counts_rejects_bad_shapes(logits_shape, labels_shape, mask_shape, num_classes):
    with pytest.raises(ValueError):
        metrics.confusion_counts(
            jnp.zeros(logits_shape),
            jnp.zeros(labels_shape, jnp.int32),
            jnp.ones(mask_shape, bool),
            num_classes,
        )


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
