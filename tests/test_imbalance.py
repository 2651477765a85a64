"""Tests of the class-imbalance options: class-weighted loss and class-balanced sampling."""

import collections
import json
import math

import numpy as np
import optax
import pytest

from emohrnet_jax import config_check, run_config, steps, train
from emohrnet_jax.data import balance, pipeline
from tests import helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)  # once for the module


@pytest.fixture(scope="module")
def skewed(data_dir):
    """The tiny fold with classes 0-2 merged into class 0: 3 training examples of 0 per 1 of 1."""
    fold = pipeline.create_fold_input(helpers.tiny_config(data_dir))
    return pipeline.FoldInput(
        builder=fold.builder,
        speakers=fold.speakers,
        class_names=("merged", "sad"),
        num_frames=fold.num_frames,
        label_map=(0, 0, 0, 1),
    )


def test_balanced_weights_are_n_over_k_times_the_class_count():
    labels = [0, 0, 0, 1, 2, 2]  # n = 6, k = 3
    weights = balance.class_weights(labels, ("a", "b", "c"))
    np.testing.assert_allclose(weights, (6 / 9, 6 / 3, 6 / 6))
    assert np.mean([weights[label] for label in labels]) == pytest.approx(1.0)


def test_a_class_without_training_examples_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"\['c'\] have no training example") as error:
        balance.class_weights([0, 1, 1], ("a", "b", "c"))
    assert "\n" not in str(error.value)


def test_the_weighted_loss_is_the_batch_mean_weighted_by_class():
    # Example 0: p(label 0) = 1/2; example 1: p(label 1) = 1/4. Weights 1 and 3.
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]], np.float32)
    labels = np.array([0, 1])
    loss = steps.cross_entropy(logits, labels, (1.0, 3.0))
    expected = (1 * math.log(2) + 3 * math.log(4)) / (1 + 3)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_no_weights_is_the_unweighted_mean_bit_for_bit():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    today = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    assert np.array_equal(steps.cross_entropy(logits, labels, None), today)
    # Equal weights give the same mean (up to rounding).
    assert float(steps.cross_entropy(logits, labels, (2.0,) * 4)) == pytest.approx(float(today))


def test_no_weights_shares_the_train_step_of_today():
    config = helpers.tiny_config("/data")
    mesh = steps.make_mesh()
    today, _ = steps.jit_steps(config, mesh, 4, 4)
    assert steps.jit_steps(config, mesh, 4, 4, class_weights=None)[0] is today
    assert steps.jit_steps(config, mesh, 4, 4, class_weights=(1.0,) * 4)[0] is not today


def test_the_balanced_order_draws_every_class_equally_often():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 3 + [3] * 1)
    order = balance.balanced_order(labels, 62, seed=0, epoch=0)
    counts = np.bincount(labels[order], minlength=4)
    assert sorted(counts) == [15, 15, 16, 16]  # 62 = 4 * 15 + 2
    uses = collections.Counter(order.tolist())
    # A class repeats its examples evenly; a large class is subsampled without repeats.
    assert {uses[i] for i in range(60, 63)} <= {5, 6}
    assert all(uses[i] <= 1 for i in range(50))
    assert uses[63] == counts[3]


def test_the_balanced_order_is_a_function_of_seed_and_epoch():
    labels = np.array([0] * 30 + [1] * 5 + [2] * 9)
    order = balance.balanced_order(labels, 40, seed=3, epoch=1)
    np.testing.assert_array_equal(order, balance.balanced_order(labels, 40, seed=3, epoch=1))
    assert not np.array_equal(order, balance.balanced_order(labels, 40, seed=3, epoch=2))
    assert not np.array_equal(order, balance.balanced_order(labels, 40, seed=4, epoch=1))


def test_balanced_batches_even_out_a_skewed_training_split(skewed):
    labels = [u["label"] for u in skewed.utterances("train")]
    assert labels.count(0) == 3 * labels.count(1)
    shuffled = list(skewed.train_batches(8, seed=0, epoch=0))
    batches = list(skewed.train_batches(8, seed=0, epoch=0, sampling="balanced"))
    assert len(batches) == len(shuffled) == len(labels) // 8  # as many steps as today
    drawn = np.concatenate([b["label"] for b in batches])
    assert np.bincount(drawn).tolist() == [len(drawn) // 2] * 2
    again = list(skewed.train_batches(8, seed=0, epoch=0, sampling="balanced"))
    later = list(skewed.train_batches(8, seed=0, epoch=1, sampling="balanced"))
    ids = lambda batches: [i for b in batches for i in b["id"]]  # noqa: E731
    assert ids(again) == ids(batches) and ids(later) != ids(batches)
    np.testing.assert_array_equal(again[0]["mel"], batches[0]["mel"])
    assert batches[0]["mel"].shape == shuffled[0]["mel"].shape


def test_balanced_rows_of_the_hosts_stack_to_the_one_host_batch(skewed):
    one = list(skewed.train_batches(8, 0, 1, sampling="balanced"))
    hosts = [list(skewed.train_batches(8, 0, 1, p, 2, sampling="balanced")) for p in (0, 1)]
    assert len(one) == len(hosts[0]) == len(hosts[1])
    for step, batch in enumerate(one):
        for key in ("id", "mel", "label"):
            stacked = np.concatenate([host[step][key] for host in hosts])
            np.testing.assert_array_equal(stacked, batch[key])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"class_weights": "inverse"}, "class_weights='inverse' is not one of"),
        ({"data.sampling": "oversample"}, "data.sampling='oversample' is not one of"),
    ],
)
def test_unknown_values_name_the_field(changes, message):
    with pytest.raises(config_check.ConfigError, match=message):
        config_check.check(helpers.tiny_config("/data", **changes))


def test_a_resume_with_another_imbalance_option_is_refused():
    saved = helpers.tiny_config("/data")
    new = helpers.tiny_config("/data", class_weights="balanced", **{"data.sampling": "balanced"})
    found = run_config.differences(run_config.as_json(saved), run_config.as_json(new))
    assert found == [
        "class_weights: 'none' -> 'balanced'",
        "data.sampling: 'shuffle' -> 'balanced'",
    ]
    # A config.json from before these options existed trained as their defaults do.
    older = run_config.as_json(saved)
    del older["class_weights"], older["data"]["sampling"]
    assert run_config.differences(older, run_config.as_json(saved)) == []
    assert run_config.differences(older, run_config.as_json(new)) == found


@pytest.mark.slow
def test_a_run_trains_with_both_options(data_dir, tmp_path):
    config = helpers.tiny_config(
        data_dir, class_weights="balanced", num_epochs=1, **{"data.sampling": "balanced"}
    )
    results = train.train_and_evaluate(config, str(tmp_path))
    assert 0.0 <= results["test"]["ua"] <= 1.0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["class_weights"] == "balanced" and saved["data"]["sampling"] == "balanced"
