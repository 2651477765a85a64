"""Tests of whole-utterance evaluation (the windows `predict` scores) and temperature scaling."""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest
import soundfile

from emohrnet_jax import (
    calibration,
    evaluation,
    export,
    predict,
    run_config,
    steps,
    storage,
    windows,
)
from emohrnet_jax.audio import features
from emohrnet_jax.data import builders, pipeline
from tests import helpers
from tests import saved_run as saved_run_module

# ---------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("frames", "starts"),
    [(10, [0]), (32, [0]), (33, [0, 1]), (48, [0, 16]), (64, [0, 16, 32]), (70, [0, 16, 32, 38])],
)
def test_windows_tile_the_clip_and_the_last_ends_at_its_end(frames, starts):
    assert windows.Windowing(num_frames=32, hop_frames=16).starts(frames) == starts


@pytest.mark.parametrize(("frames", "start"), [(10, 0), (32, 0), (33, 0), (70, 19)])
def test_the_centre_crop_is_one_window_in_the_middle(frames, start):
    assert windows.Windowing(32, 16, windows.CENTRE_CROP).starts(frames) == [start]


def test_windows_are_normalized_with_the_whole_clip_and_padded_with_zeros():
    mel = np.random.default_rng(0).normal(3.0, 2.0, (8, 40)).astype(np.float16)
    exact = mel.astype(np.float64)
    normalized = (exact - exact.mean()) / exact.std()
    first, last = windows.Windowing(32, 16).windows(mel)
    np.testing.assert_allclose(first, normalized[:, :32], atol=1e-5)
    np.testing.assert_allclose(last, normalized[:, 8:], atol=1e-5)
    (short,) = windows.Windowing(64, 16).windows(mel)
    assert short.shape == (8, 64) and (short[:, 40:] == 0).all()


def test_bad_windowing_is_refused():
    with pytest.raises(ValueError, match="hop_frames >= 1"):
        windows.Windowing(32, 0)
    with pytest.raises(ValueError, match="not one of"):
        windows.Windowing(32, 16, "whole")


def test_softmax_at_a_temperature_and_with_a_left_out_class():
    logits = np.array([[2.0, 0.0, -np.inf]])
    e2 = np.exp(2.0)
    np.testing.assert_allclose(windows.softmax(logits), [[e2 / (e2 + 1), 1 / (e2 + 1), 0.0]])
    half = windows.softmax(logits, 2.0)[0]
    np.testing.assert_allclose(half, [np.e / (np.e + 1), 1 / (np.e + 1), 0.0])


# ---------------------------------------------------------------- temperature


def _overconfident(scale, n=4000, classes=4, seed=0):
    """Labels drawn from softmax(z), and logits `scale * z`: the right temperature is `scale`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, classes))
    p = windows.softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return scale * z, labels


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_the_fitted_temperature_undoes_a_known_overconfidence(scale):
    logits, labels = _overconfident(scale)
    temperature = calibration.fit_temperature(logits, labels)
    assert temperature == pytest.approx(scale, rel=0.1)
    # The minimum: a little either side is worse, and the argmax never moves.
    best = calibration.negative_log_likelihood(logits, labels, temperature)
    for other in (0.9 * temperature, 1.1 * temperature):
        assert calibration.negative_log_likelihood(logits, labels, other) > best
    assert (windows.softmax(logits, temperature).argmax(1) == logits.argmax(1)).all()


def test_all_right_predictions_take_the_search_bound_and_no_data_is_refused():
    logits = np.array([[3.0, 0.0], [0.0, 3.0]])
    assert calibration.fit_temperature(logits, np.array([0, 1])) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="no utterances"):
        calibration.fit_temperature(np.zeros((0, 2)), np.zeros(0, int))


def test_a_temperature_serves_only_the_state_it_was_fitted_to(tmp_path):
    assert calibration.load_temperature(str(tmp_path), 4) == 1.0  # none fitted
    logits, labels = _overconfident(2.0, n=500)
    record = calibration.fit(logits, labels, best_step=4)
    calibration.save(str(tmp_path), record)
    assert json.loads((tmp_path / calibration.FILE).read_text()) == record
    assert record["validation_nll"]["after"] < record["validation_nll"]["before"]
    assert calibration.load_temperature(str(tmp_path), 4) == record["temperature"]
    assert calibration.load_temperature(str(tmp_path), 8) == 1.0  # trained on since


def test_predict_divides_by_the_runs_temperature(saved_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(saved_run.workdir, workdir)
    waveform = helpers.speech(1.0)
    plain = predict.Predictor(str(workdir), batch_size=8).predict(waveform, 16000)
    calibration.save(str(workdir), {"temperature": 2.0, "best_step": 4})
    scaled = predict.Predictor(str(workdir), batch_size=8).predict(waveform, 16000)
    np.testing.assert_allclose(scaled.logits, plain.logits)
    expected = windows.softmax(plain.logits.astype(np.float64), 2.0)
    np.testing.assert_allclose(list(scaled.probabilities.values()), expected, rtol=1e-6)
    assert scaled.label == plain.label


# ---------------------------------------------------------------- evaluation equals predict


def _labelled_corpus(folder):
    """Clips from shorter than a window to several windows long, 3 speakers, 4 classes."""
    folder.mkdir()
    rows = []
    for i, seconds in enumerate([0.3, 0.5, 0.9, 1.6, 2.2, 0.7] * 3):
        path = folder / f"clip{i:02d}.wav"
        soundfile.write(path, helpers.speech(seconds, index=i % 4), 16000, subtype="PCM_16")
        rows.append(f"{path.name},{saved_run_module.config().data.class_names[i % 4]},s{i // 6}")
    (folder / "clips.csv").write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    return folder / "clips.csv"


@pytest.mark.slow
def test_whole_utterance_evaluation_equals_predict_on_the_same_files(tmp_path):
    csv_path = _labelled_corpus(tmp_path / "corpus")
    config = saved_run_module.config()
    config.data.dataset, config.data.csv = "labelled_folder", str(csv_path)
    config.data.class_names = tuple(sorted(config.data.class_names))  # as the folder's build
    config.data.data_dir, config.data.num_folds = str(tmp_path / "tfds"), 3
    config.batch_size = 8
    builders.prepare(
        "labelled_folder",
        config.data.data_dir,
        feature_params=features.FeatureParams.from_config(config.data),
        num_workers=0,
        csv_path=str(csv_path),
    )
    run = saved_run_module.make(str(tmp_path / "run"), config)
    fold = pipeline.create_fold_input(config)
    mesh = steps.make_mesh()
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    eval_step = steps.jit_eval_step(config, mesh, 4)
    # Shared with other tests of this tiny model, which may have compiled it for other inputs.
    compiled = eval_step._cache_size()
    scored = {
        split: evaluation.evaluate_with_predictions(
            eval_step, run.best, fold, split, 8, sharding, windows.Windowing.from_config(config)
        )
        for split in ("validation", "test")
    }
    # Utterances of 1 to 9 windows, in batches of one shape: one compiled evaluation program.
    assert eval_step._cache_size() - compiled <= 1
    _assert_predict_scores_the_same(run.workdir, scored.values(), tmp_path / "corpus")
    # Per-band normalization too (test split only: the same code path, half the time).
    config.data.normalization = features.UTTERANCE_BAND
    storage.write_json_atomically(
        os.path.join(run.workdir, "config.json"), run_config.as_json(config)
    )
    fold = dataclasses.replace(fold, normalization=features.Normalization(features.UTTERANCE_BAND))
    banded = evaluation.evaluate_with_predictions(
        eval_step, run.best, fold, "test", 8, sharding, windows.Windowing.from_config(config)
    )
    assert not np.allclose(banded[1].logits, scored["test"][1].logits, atol=1e-3)
    _assert_predict_scores_the_same(run.workdir, [banded], tmp_path / "corpus")


def _assert_predict_scores_the_same(workdir, scored, corpus):
    """`predict` of the files of each `(summary, predictions)` gives the evaluation's scores."""
    predictor = predict.Predictor(workdir, batch_size=8)
    for summary, predictions in scored:
        files = [str(corpus / f"{u['id']}.wav") for u in predictions.utterances]
        served = [prediction for _, prediction in predictor.predict_files(files)]
        assert sum(p.windows for p in served) == summary["windows"] > len(files)
        np.testing.assert_allclose(
            predictions.probabilities,
            [list(p.probabilities.values()) for p in served],
            atol=1e-5,
        )
        np.testing.assert_allclose(predictions.logits, [p.logits for p in served], atol=1e-4)


def test_exports_divide_by_the_temperature(saved_run):
    variables = {"params": saved_run.best.params, "batch_stats": saved_run.best.batch_stats}
    mel = np.random.default_rng(0).standard_normal((2, 32, 32)).astype(np.float32)
    out = export.serving_function(saved_run.config, variables, temperature=2.0)(mel)
    expected = windows.softmax(np.asarray(out["logits"], np.float64), 2.0)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-5)
    info = export.metadata(saved_run.config, {"step": 4}, ["cpu"], ["jax"], temperature=2.0)
    assert info["temperature"] == 2.0
