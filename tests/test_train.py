"""Tests of the train steps, sharding, checkpoints, resume, NaN detection and the entry point."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from emohrnet_jax import checkpoints, cross_validation, report, rescoring, steps, storage, train
from emohrnet_jax.data import pipeline
from tests import helpers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)  # once for the module


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    """A complete 2-epoch run, the reference for the resume tests."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    return train.train_and_evaluate(helpers.tiny_config(data_dir), str(workdir)), workdir


def _batch(n=8, frames=32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "mel": rng.standard_normal((n, 32, frames)).astype(np.float32),
        "label": rng.integers(0, 4, n),
    }


def test_sharded_steps_match_a_single_device(data_dir):
    assert jax.device_count() == 8, "conftest fakes 8 CPU devices"
    config = helpers.tiny_config(data_dir)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        state = jax.device_put(steps.create_train_state(config, steps_per_epoch=4), replicated)
        train_step, _ = steps.jit_steps(config, mesh, num_classes=4, steps_per_epoch=4)
        losses = []
        for i in range(2):
            state, step_metrics = train_step(state, _batch(seed=i), jax.random.key(0))
            losses.append(float(step_metrics["loss"]))
        results.append((losses, jax.device_get(state.params), jax.device_get(state.batch_stats)))
    (losses_1, params_1, stats_1), (losses_8, params_8, stats_8) = results
    assert np.isfinite(losses_1).all()
    np.testing.assert_allclose(losses_1, losses_8, rtol=1e-5)
    # Adam divides by the gradients' size, so float rounding of a near-zero gradient (summed in
    # another order over 8 devices) can move a parameter by ~1e-5; a sharding bug moves it by the
    # whole step (lr = 1e-3).
    chex.assert_trees_all_close(params_1, params_8, atol=1e-4)
    chex.assert_trees_all_close(stats_1, stats_8, atol=1e-5)


def test_a_train_step_updates_parameters_statistics_and_the_step(data_dir):
    config = helpers.tiny_config(data_dir)
    mesh = steps.make_mesh()
    state = steps.create_train_state(config, steps_per_epoch=4)
    before = jax.device_get((state.params, state.batch_stats))
    train_step, eval_step = steps.jit_steps(config, mesh, num_classes=4, steps_per_epoch=4)
    state, step_metrics = train_step(state, _batch(), jax.random.key(0))
    assert int(state.step) == 1
    assert np.isfinite(float(step_metrics["loss"]))
    for old, new in zip(
        jax.tree.leaves(before), jax.tree.leaves((state.params, state.batch_stats)), strict=True
    ):
        assert not np.array_equal(old, new)
    out = eval_step(state, _batch())
    chex.assert_shape(out["logits"], (8, 4))
    assert out["logits"].dtype == np.float32 and np.isfinite(out["logits"]).all()


def test_the_state_is_drawn_on_the_host_cpu_and_left_uncommitted(data_dir):
    config = helpers.tiny_config(data_dir)
    expected = jax.device_get(steps.create_train_state(config, steps_per_epoch=4).params)
    with jax.default_device(jax.devices()[3]):  # as a GPU would be the default device
        state = steps.create_train_state(config, steps_per_epoch=4)
    host_cpu = jax.local_devices(backend="cpu")[0]
    for leaf in jax.tree.leaves(state):
        assert leaf.devices() == {host_cpu} and not leaf.committed
    chex.assert_trees_all_equal(jax.device_get(state.params), expected)


def test_the_state_is_drawn_on_the_default_device_without_a_cpu_backend(data_dir, monkeypatch):
    def local_devices(backend=None):
        raise RuntimeError(f"Unknown backend {backend}")  # as with JAX_PLATFORMS=cuda

    config = helpers.tiny_config(data_dir)
    monkeypatch.setattr(jax, "local_devices", local_devices)
    with jax.default_device(jax.devices()[3]):
        state = steps.create_train_state(config, steps_per_epoch=4)
    assert jax.tree.leaves(state.params)[0].devices() == {jax.devices()[3]}


def test_checkpoint_round_trip(data_dir, tmp_path):
    config = helpers.tiny_config(data_dir)
    mesh = steps.make_mesh()
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.device_put(steps.create_train_state(config, steps_per_epoch=4), replicated)
    train_step, eval_step = steps.jit_steps(config, mesh, num_classes=4, steps_per_epoch=4)
    state, _ = train_step(state, _batch(), jax.random.key(0))  # non-trivial optimizer state
    manager = checkpoints.create_manager(str(tmp_path), keep_latest=2)
    history = [{"epoch": 1, "step": 1, "validation_ua": 0.5}]
    checkpoints.save(manager, 1, state, history, validation_ua=0.5)
    manager.wait_until_finished()
    fresh = jax.device_put(jax.tree.map(np.zeros_like, state), replicated)
    restored, restored_history = checkpoints.restore(manager, 1, fresh)
    chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state.params))
    chex.assert_trees_all_equal(jax.device_get(restored.opt_state), jax.device_get(state.opt_state))
    chex.assert_trees_all_equal(restored.batch_stats, state.batch_stats)
    assert int(restored.step) == 1 and restored_history == history
    # As in training, the restored state has the fresh one's types (no weakly typed step), so
    # the jitted steps reuse their compiled programs for it.
    batch = _batch()
    eval_step(state, batch)
    compiled = train_step._cache_size(), eval_step._cache_size()
    eval_step(restored, batch)
    train_step(restored, _batch(), jax.random.key(0))
    assert (train_step._cache_size(), eval_step._cache_size()) == compiled


def test_equal_settings_share_the_jitted_steps_and_other_optimizers_do_not(data_dir):
    config = helpers.tiny_config(data_dir)
    mesh = steps.make_mesh()
    train_step, eval_step = steps.jit_steps(config, mesh, 4, steps_per_epoch=4)
    other_fold = helpers.tiny_config(data_dir, **{"data.fold": 1})
    assert steps.jit_steps(other_fold, mesh, 4, steps_per_epoch=4) == (train_step, eval_step)
    changes = ({"learning_rate": 0.5}, {"grad_clip_norm": 1.0}, {"augment.spec_augment": False})
    for changed in changes:
        other = helpers.tiny_config(data_dir, **changed)
        other_train, other_eval = steps.jit_steps(other, mesh, 4, steps_per_epoch=4)
        assert other_train is not train_step and other_eval is eval_step
    assert steps.jit_steps(config, mesh, 4, steps_per_epoch=5)[0] is not train_step
    small = helpers.tiny_config(data_dir, **{"model.variant": "small"})
    assert steps.jit_steps(small, mesh, 4, steps_per_epoch=4)[1] is not eval_step


def test_the_folds_of_one_process_trace_the_steps_once(data_dir, monkeypatch):
    traces = {"train": 0, "eval": 0}
    for name in traces:
        original = getattr(steps, f"{name}_step")

        def counted(*args, name=name, original=original, **kwargs):
            traces[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(steps, f"{name}_step", counted)
    # Settings no other test uses, so that no jitted step exists yet for them.
    config, classes = helpers.tiny_config(data_dir, learning_rate=2e-3), (0, 1, 2, 3)
    mesh = steps.make_mesh()
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    for fold in (0, 1):
        fold_config = helpers.tiny_config(data_dir, learning_rate=2e-3, **{"data.fold": fold})
        state = jax.device_put(steps.create_train_state(fold_config, 4), replicated)
        train_step, eval_step = steps.jit_steps(fold_config, mesh, 4, 4, eval_classes=classes)
        state, _ = train_step(state, _batch(), jax.random.key(0))
        eval_step(state, _batch())
    assert traces == {"train": 1, "eval": 1}
    for step in steps.jit_steps(config, mesh, 4, 4, eval_classes=classes):
        assert step._cache_size() == 1  # compiled once, for both folds' states


def test_training_writes_results_chosen_on_validation(uninterrupted):
    results, workdir = uninterrupted
    for name in (
        "results.json",
        "splits.json",
        "config.json",
        "confusion_matrix.png",
        "curves.png",
    ):
        assert (workdir / name).is_file(), name
    with open(workdir / "results.json") as file:
        saved = json.load(file)
    assert saved["test"] == results["test"]
    for key in (
        "dataset",
        "fold",
        "class_names",
        "best_epoch",
        "train_seconds",
        "examples_per_second",
    ):
        assert key in saved
    for split in ("validation", "test"):
        confusion = np.array(saved[split]["confusion_matrix"])
        assert confusion.sum() == 16  # 2 speakers x 8 utterances, each counted once
        for key in ("ua", "wa", "macro_f1", "per_class_recall"):
            assert key in saved[split]
    assert set(saved["speakers"]["test"]).isdisjoint(saved["speakers"]["train"])
    manager = checkpoints.create_manager(str(workdir), keep_latest=2)
    _, history = checkpoints.restore(manager, manager.latest_step(), _state_like(workdir))
    best = max(history, key=lambda r: (r["validation_ua"], r["step"]))
    assert saved["best_epoch"] == best["epoch"]
    assert saved["validation"]["ua"] == pytest.approx(best["validation_ua"])


def _check_scored(summary, speakers):
    """A scored split's intervals, per-speaker UA and calibration are the contract's, and sane."""
    for metric in ("ua", "wa", "macro_f1"):
        low, high = summary["ci95"][metric]
        assert 0.0 <= low <= summary[metric] <= high <= 1.0, (metric, low, high)
    per_speaker = summary["per_speaker_ua"]
    assert sorted(per_speaker) == sorted(speakers)
    worst = min(per_speaker, key=per_speaker.get)
    assert summary["worst_speaker"] == {"speaker": worst, "ua": per_speaker[worst]}
    assert 0.0 <= summary["ece"] <= 1.0 and 0.0 <= summary["brier"] <= 2.0


def test_results_carry_intervals_calibration_predictions_and_the_split(uninterrupted):
    results, workdir = uninterrupted
    saved = json.loads((workdir / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))  # returned as written
    assert saved["evaluation"] == "utterance" and saved["speaker_independent"] is True
    assert saved["bootstrap"] == {"resamples": 1000, "seed": 0}
    fingerprint = json.loads((workdir / "splits.json").read_text())["split_fingerprint"]
    assert saved["split_fingerprint"] == fingerprint and len(fingerprint) == 64
    for split in ("validation", "test"):
        _check_scored(saved[split], saved["speakers"][split])
        lines = (workdir / f"predictions_{split}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert len(rows) == 16 and len({row["id"] for row in rows}) == 16
        keys = ["id", "speaker", "label", "probabilities", "logits"]
        assert all(list(row) == keys for row in rows)
        assert {row["speaker"] for row in rows} == set(saved["speakers"][split])
        probabilities = np.array([row["probabilities"] for row in rows])
        # The probabilities served: the mean window logits at the temperature fitted on validation.
        scaled = np.array([row["logits"] for row in rows]) / saved["temperature"]
        expected = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), 1e-5)
        assert set(saved[split]["uncalibrated"]) == {"ece", "brier"}
        confusion = np.zeros((4, 4), int)
        np.add.at(confusion, ([row["label"] for row in rows], probabilities.argmax(axis=1)), 1)
        assert confusion.tolist() == saved[split]["confusion_matrix"]
    assert "UA 95% CI" in report.format_table(saved)
    fitted = json.loads((workdir / "calibration.json").read_text())
    assert fitted["best_step"] == saved["best_step"] and fitted["fitted_on"] == "validation"
    assert fitted["temperature"] == saved["temperature"] != 1.0
    assert fitted["validation_nll"]["after"] <= fitted["validation_nll"]["before"]


def test_evaluate_mode_rescores_the_best_state(uninterrupted, data_dir):
    results, workdir = uninterrupted
    result = rescoring.evaluate_run(helpers.tiny_config(data_dir), str(workdir), "test")
    assert result["confusion_matrix"] == results["test"]["confusion_matrix"]
    for key in ("ci95", "per_speaker_ua", "worst_speaker"):
        assert result[key] == results["test"][key], key
    assert [result["ece"], result["brier"]] == pytest.approx(
        [results["test"]["ece"], results["test"]["brier"]]
    )
    assert result["best_epoch"] == results["best_epoch"]
    with open(workdir / "evaluation_test.json") as file:
        assert json.load(file)["ua"] == pytest.approx(results["test"]["ua"])


def test_evaluate_mode_needs_a_trained_run(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="train this run first"):
        rescoring.evaluate_run(helpers.tiny_config(data_dir), str(tmp_path), "test")


def _state_like(workdir):
    with open(workdir / "config.json") as file:
        stored = json.load(file)
    config = helpers.load_config("demo")
    config.data.n_mels, config.data.num_frames = (
        stored["data"]["n_mels"],
        stored["data"]["num_frames"],
    )
    config.model.variant = stored["model"]["variant"]
    # The schedule decides the optimizer state's structure.
    config.lr_schedule, config.warmup_epochs = stored["lr_schedule"], stored["warmup_epochs"]
    return steps.create_train_state(config, steps_per_epoch=4)


def _same_run(a, b):
    for split in ("validation", "test"):
        assert a[split]["confusion_matrix"] == b[split]["confusion_matrix"]
        assert a[split]["loss"] == pytest.approx(b[split]["loss"], rel=1e-4)
    assert a["best_epoch"] == b["best_epoch"]
    assert a["split_fingerprint"] == b["split_fingerprint"]  # the same fold, the same utterances


@pytest.mark.parametrize("at", [3, 4])  # mid-epoch 0; the last step of epoch 0
def test_preempted_and_resumed_equals_uninterrupted(
    uninterrupted, data_dir, tmp_path, monkeypatch, at
):
    monkeypatch.setattr(train.Preemption, "reached", lambda self, step: step == at)
    assert train.train_and_evaluate(helpers.tiny_config(data_dir), str(tmp_path)) is None
    manager = checkpoints.create_manager(str(tmp_path), 2)
    assert manager.latest_step() == at
    # Stopped at an epoch's end, that epoch was validated and recorded first.
    assert len(checkpoints.restore_history(manager, at)) == at // 4
    monkeypatch.undo()
    _same_run(
        train.train_and_evaluate(helpers.tiny_config(data_dir), str(tmp_path)), uninterrupted[0]
    )


def test_killed_with_sigkill_and_rerun_equals_uninterrupted(uninterrupted, data_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "emohrnet_jax.main",
        *helpers.tiny_flags(data_dir),
        f"--workdir={tmp_path}",
    ]
    # conftest's XLA flags and compilation cache: the same 8 devices and compiled steps.
    process = subprocess.Popen(command, env=os.environ, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    first_epoch = tmp_path / "checkpoints" / "4"  # 32 training examples / 8 = 4 steps
    while not first_epoch.is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
    assert not (tmp_path / "results.json").exists()
    resumed = train.train_and_evaluate(helpers.tiny_config(data_dir), str(tmp_path))
    _same_run(resumed, uninterrupted[0])


def test_non_finite_loss_stops_with_the_step(data_dir, tmp_path, monkeypatch):
    original = pipeline.FoldInput.train_batches

    def poisoned(self, *args, **kwargs):
        for i, batch in enumerate(original(self, *args, **kwargs)):
            if i == 2:
                batch["mel"][:] = np.nan
            yield batch

    monkeypatch.setattr(pipeline.FoldInput, "train_batches", poisoned)
    # Step 3 comes before the first epoch's checkpoint (step 4).
    with pytest.raises(FloatingPointError, match="at step 3; no checkpoint was saved yet"):
        train.train_and_evaluate(helpers.tiny_config(data_dir), str(tmp_path))


def test_batch_size_must_divide_over_the_devices(data_dir, tmp_path):
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        train.train_and_evaluate(helpers.tiny_config(data_dir, batch_size=12), str(tmp_path))


def test_main_rejects_a_misspelled_override_naming_it(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emohrnet_jax.main",
            f"--config={helpers.CONFIGS / 'demo.py'}",
            f"--workdir={tmp_path}",
            "--config.learning_rte=0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "learning_rte" in result.stderr
    assert not any(tmp_path.iterdir())


def test_cross_corpus_evaluation_maps_labels_and_counts_the_rest(uninterrupted, data_dir, tmp_path):
    _, workdir = uninterrupted
    config = helpers.tiny_config(
        data_dir,
        **{
            "cross_corpus.dataset": "labelled_folder",
            "cross_corpus.csv": str(tmp_path / "clips.csv"),
            "cross_corpus.label_map": "anger=angry, joy=happy, neutral=neutral",
        },
    )
    helpers.prepared_labelled_folder(tmp_path, config.data, 2)
    result = rescoring.evaluate_run(config, str(workdir), "all")
    assert result["left_out"] == {"calm": 4}
    assert result["label_map"] == {"anger": "angry", "joy": "happy", "neutral": "neutral"}
    assert list(result["per_class_recall"]) == ["neutral", "happy", "angry"]
    # Predictions are restricted to the mapped classes: none falls outside the 3x3 matrix.
    assert np.sum(result["confusion_matrix"]) == result["num_examples"] == 12
    assert np.sum(result["confusion_matrix"], axis=1).tolist() == [4, 4, 4]
    assert (workdir / "evaluation_labelled_folder_all.png").exists()
    with open(workdir / "evaluation_labelled_folder_all.json") as file:
        assert json.load(file)["ua"] == pytest.approx(result["ua"])


def test_all_speakers_of_the_training_corpus_is_refused(uninterrupted, data_dir):
    with pytest.raises(ValueError, match="training speakers included"):
        rescoring.evaluate_run(helpers.tiny_config(data_dir), str(uninterrupted[1]), "all")


def test_cross_validation_summarizes_folds_and_skips_finished_ones(
    data_dir, tmp_path, monkeypatch, gcs
):
    config = helpers.tiny_config(data_dir, num_epochs=1)
    summary = cross_validation.run_folds(config, str(tmp_path), folds=[0, 1])
    folds = []
    for k in (0, 1):
        with open(tmp_path / f"fold_{k}" / "results.json") as file:
            folds.append(json.load(file))
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    assert summary["num_folds"] == 4 and summary["folds_done"] == 2
    uas = [f["test"]["ua"] for f in folds]
    assert summary["mean"]["ua"] == pytest.approx(np.mean(uas))
    assert summary["std"]["ua"] == pytest.approx(np.std(uas, ddof=1))
    summed = np.add(folds[0]["test"]["confusion_matrix"], folds[1]["test"]["confusion_matrix"])
    assert summary["confusion_matrix"] == summed.tolist()
    assert folds[0]["speakers"]["test"] != folds[1]["speakers"]["test"]
    assert folds[0]["split_fingerprint"] != folds[1]["split_fingerprint"]
    for metric in ("ua", "wa", "macro_f1"):
        low, high = summary["ci95"][metric]
        assert 0.0 <= low <= summary["pooled"][metric] <= high <= 1.0, metric
    assert summary["bootstrap"] == folds[0]["bootstrap"]
    assert "95% CI" in cross_validation.format_summary(summary)
    assert (tmp_path / "confusion_matrix.png").exists()
    assert "+-" in cross_validation.format_summary(summary)

    def no_training(*_):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(train, "train_and_evaluate", no_training)
    assert cross_validation.run_folds(config, str(tmp_path), folds=[0, 1]) == summary
    # The same folds in a bucket: read back from there, the summary and its PNG written there.
    for k in (0, 1):
        storage.upload_tree(str(tmp_path / f"fold_{k}"), f"{gcs}/cv/fold_{k}")
    assert cross_validation.run_folds(config, f"{gcs}/cv", folds=[0, 1]) == summary
    assert storage.read_json(f"{gcs}/cv/summary.json") == summary
    assert storage.exists(f"{gcs}/cv/confusion_matrix.png")
    assert not storage.exists(f"{gcs}/cv/.lock")
    with pytest.raises(ValueError, match="out of range"):
        cross_validation.run_folds(config, str(tmp_path), folds=[4])
