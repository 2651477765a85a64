"""Tests of `config.data.normalization`: per utterance, per Mel band, or with the training split's
per-band statistics (normalization.json), the same in training, evaluation, predict and export."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from emohrnet_jax import (
    config_check,
    export,
    normalization,
    predict,
    run_config,
    storage,
    train,
    windows,
)
from emohrnet_jax.audio import features
from emohrnet_jax.data import builders, pipeline
from tests import helpers


def _banded_mel(frames, seed=0):
    """A stored float16 log-Mel `(8, frames)` whose bands have different levels and spreads."""
    rng = np.random.default_rng(seed)
    levels, spreads = np.linspace(-12.0, 2.0, 8)[:, None], np.linspace(0.5, 4.0, 8)[:, None]
    return (levels + spreads * rng.standard_normal((8, frames))).astype(features.STORED_DTYPE)


def test_utterance_band_windows_have_unit_statistics_per_band_over_the_clip():
    mel = _banded_mel(70)
    statistics = features.Normalization(features.UTTERANCE_BAND).statistics(mel)
    first, _, third, last = windows.Windowing(32, 16).windows(mel, statistics)  # starts 0 16 32 38
    clip = np.concatenate([first, third, last[:, 26:]], axis=1)  # frames 0-31, 32-63, 64-69
    assert clip.shape == (8, 70)
    np.testing.assert_allclose(clip.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(clip.std(axis=1), 1.0, atol=1e-4)
    # Per utterance, the bands keep their levels (the spectral tilt).
    (whole,) = windows.Windowing(70, 16).windows(mel)
    assert np.ptp(whole.mean(axis=1)) > 1.0


def test_utterance_statistics_are_scalars_and_band_ones_a_column_per_band():
    mel = _banded_mel(40)
    mean, scale = features.normalization_statistics(mel)
    exact = mel.astype(np.float64)
    assert isinstance(mean, float) and mean == pytest.approx(exact.mean(), rel=1e-12)
    assert scale == pytest.approx(np.sqrt(exact.var() + features.NORMALIZATION_EPSILON))
    mean, scale = features.normalization_statistics(mel, features.UTTERANCE_BAND)
    assert mean.shape == scale.shape == (8, 1)
    np.testing.assert_allclose(mean[:, 0], exact.mean(axis=1), rtol=1e-12)
    with pytest.raises(ValueError, match="no per-clip statistics"):
        features.normalization_statistics(mel, features.TRAINING_BAND)


def test_a_normalization_is_checked():
    with pytest.raises(ValueError, match="not one of"):
        features.Normalization("global")
    with pytest.raises(ValueError, match="training_band only"):
        features.Normalization(features.TRAINING_BAND)
    config = helpers.load_config("demo")
    config.data.normalization = "band"
    with pytest.raises(config_check.ConfigError, match=r"^config.data.normalization='band'"):
        config_check.check(config)
    assert config_check.NORMALIZATIONS == features.NORMALIZATIONS
    for name in ("default", "ravdess", "iemocap", "emovo"):  # the paper's
        assert helpers.load_config(name).data.normalization == features.UTTERANCE


def test_a_resume_with_another_normalization_is_refused(tmp_path):
    config = helpers.load_config("demo")
    storage.write_json_atomically(str(tmp_path / "config.json"), run_config.as_json(config))
    config.data.normalization = features.UTTERANCE_BAND
    with pytest.raises(run_config.RunConfigError, match=r"data\.normalization"):
        run_config.check_config(str(tmp_path), config)


def test_training_statistics_pool_the_frames_of_every_utterance():
    mels = [_banded_mel(frames, seed) for seed, frames in enumerate((5, 17, 40))]
    record = normalization.training_statistics(zip("bca", mels, strict=True))
    pooled = np.concatenate(mels, axis=1).astype(np.float64)
    np.testing.assert_allclose(record["mean"], pooled.mean(axis=1), rtol=1e-12)
    scale = np.sqrt(pooled.var(axis=1) + features.NORMALIZATION_EPSILON)
    np.testing.assert_allclose(record["scale"], scale, rtol=1e-9)
    assert (record["utterances"], record["frames"]) == (3, 62)
    again = normalization.training_statistics(zip("abc", mels[::-1], strict=True))
    assert again["train_ids_sha256"] == record["train_ids_sha256"]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)


@pytest.mark.slow
def test_training_band_statistics_come_from_the_training_split_only(tiny_corpus, tmp_path):
    config = helpers.tiny_config(tiny_corpus, **{"data.normalization": features.TRAINING_BAND})
    fold = pipeline.create_fold_input(config)
    normalizing = normalization.for_run(config, str(tmp_path), fold)
    stored = tfds.as_numpy(fold.builder.as_dataset(split=builders.SPLIT))
    by_split = {name: [] for name in fold.speakers}
    for example in stored:
        for name, speakers in fold.speakers.items():
            if example["speaker"].decode() in speakers:
                by_split[name].append(example["mel"].astype(np.float64))
    train_frames = np.concatenate(by_split["train"], axis=1)
    np.testing.assert_allclose(normalizing.mean, train_frames.mean(axis=1), rtol=1e-10)
    scale = np.sqrt(train_frames.var(axis=1) + features.NORMALIZATION_EPSILON)
    np.testing.assert_allclose(normalizing.scale, scale, rtol=1e-8)
    every = np.concatenate([mel for mels in by_split.values() for mel in mels], axis=1)
    assert not np.allclose(normalizing.mean, every.mean(axis=1), rtol=1e-6)  # not the others'
    record = json.loads((tmp_path / normalization.FILE).read_text())
    assert record["utterances"] == len(by_split["train"]) == fold.count("train")
    assert (record["dataset"], record["fold"]) == ("synthetic", config.data.fold)
    # A resumed run reads the file back; training and evaluation normalize with it.
    assert normalization.for_run(config, str(tmp_path), fold) == normalizing
    fold = dataclasses.replace(fold, normalization=normalizing)
    example = next(iter(tfds.as_numpy(fold.split("validation"))))
    raw = next(iter(tfds.as_numpy(fold.stored("validation"))))["mel"]
    np.testing.assert_allclose(
        example["mel"], features.normalize(raw, normalizing.statistics(raw)), atol=1e-5
    )


def _training_band_run(saved_run, tmp_path):
    """A copy of the saved run set to training_band, and a normalization.json record for it."""
    workdir = tmp_path / "run"
    shutil.copytree(saved_run.workdir, workdir)
    config = json.loads((workdir / "config.json").read_text())
    config["data"]["normalization"] = features.TRAINING_BAND
    (workdir / "config.json").write_text(json.dumps(config))
    bands = saved_run.config.data.n_mels
    record = {
        "mode": features.TRAINING_BAND,
        "mean": np.linspace(-10.0, -2.0, bands).tolist(),
        "scale": np.linspace(2.0, 4.0, bands).tolist(),
    }
    return workdir, record


@pytest.mark.slow
def test_predict_and_export_use_the_runs_training_statistics(saved_run, tmp_path):
    workdir, record = _training_band_run(saved_run, tmp_path)
    with pytest.raises(normalization.NormalizationError, match=r"normalization\.json is missing"):
        predict.Predictor(str(workdir))
    (workdir / normalization.FILE).write_text(json.dumps(record))
    predictor = predict.Predictor(str(workdir), batch_size=8)
    waveform = helpers.speech(1.0)
    stored = predictor.stored_mel(waveform, 16000)[0].astype(np.float64)
    mean, scale = (np.array(record[key])[:, None] for key in ("mean", "scale"))
    np.testing.assert_allclose(predictor.model_input(waveform, 16000), (stored - mean) / scale)
    info = export.metadata(
        predictor.config, {"step": 4}, ["cpu"], ["jax"], 1.0, predictor.normalization
    )
    assert info["normalization"]["mode"] == features.TRAINING_BAND
    assert info["normalization"]["mean"] == record["mean"]
    assert info["normalization"]["scale"] == record["scale"]
    plain = export.metadata(saved_run.config, {"step": 4}, ["cpu"], ["jax"])
    assert plain["normalization"]["mode"] == features.UTTERANCE and "mean" not in plain


@pytest.mark.slow
def test_a_training_band_run_writes_its_statistics_and_results(tiny_corpus, tmp_path):
    overrides = {"data.normalization": features.TRAINING_BAND, "num_epochs": 1}
    config = helpers.tiny_config(tiny_corpus, **overrides)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert (tmp_path / "results.json").exists() and results["test"]["ua"] >= 0.0
    record = json.loads((tmp_path / normalization.FILE).read_text())
    assert record["mode"] == features.TRAINING_BAND and len(record["mean"]) == 32
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["data"]["normalization"] == features.TRAINING_BAND
