"""Tests of cross-validation over seeds (`tools/cross_validate.py --seeds`) on run folders the
tests write, and one end-to-end run of the tiny config."""

import json
import subprocess
import sys

import numpy as np
import pytest

from emohrnet_jax import (
    compare,
    cross_validation,
    evaluation,
    metrics,
    run_config,
    statistics,
    train,
)
from tests import helpers

NAMES = ["angry", "happy", "neutral", "sad"]
RESAMPLES = 200


def _fold_utterances(fold):
    """Fold `fold` tests speakers 2k and 2k + 1, four utterances each (one of each class)."""
    speakers = np.repeat([f"spk{2 * fold}", f"spk{2 * fold + 1}"], 4)
    ids = [f"{speaker}_{j % 4}" for j, speaker in enumerate(speakers)]
    return ids, np.tile(np.arange(4), 2), speakers


def _predicted(fold, seed):
    """Right except on every third utterance, which of them depends on fold and seed."""
    _, labels, _ = _fold_utterances(fold)
    wrong = (np.arange(len(labels)) + fold + seed) % 3 == 0
    return np.where(wrong, (labels + 1) % 4, labels)


def _write_fold(folder, fold, seed):
    """A finished run: results.json (test scores, ci95, bootstrap) and predictions_test.jsonl."""
    ids, labels, speakers = _fold_utterances(fold)
    predicted = _predicted(fold, seed)
    confusion = np.zeros((4, 4), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    test = metrics.summarize(confusion, NAMES)
    test["ci95"] = statistics.speaker_bootstrap(labels, predicted, speakers, 4, RESAMPLES, seed)
    results = {
        "dataset": "synthetic",
        "fold": fold,
        "class_names": NAMES,
        "best_epoch": 1,
        "speakers": {"test": sorted(set(speakers.tolist()))},
        "bootstrap": {"resamples": RESAMPLES, "seed": seed},
        "test": test,
    }
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    probabilities = np.full((len(ids), 4), 0.1)
    probabilities[np.arange(len(ids)), predicted] = 0.7
    rows = [
        {"id": i, "speaker": str(s), "label": int(y), "probabilities": p.tolist()}
        for i, s, y, p in zip(ids, speakers, labels, probabilities, strict=True)
    ]
    (folder / "predictions_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return results


def _write_cv(workdir, folds, seeds):
    for seed in seeds:
        for fold in folds:
            _write_fold(workdir / f"seed_{seed}" / f"fold_{fold}", fold, seed)


@pytest.fixture
def config(tmp_path):
    return helpers.tiny_config(tmp_path / "data")


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*_):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train, "train_and_evaluate", refuse)


def test_finished_runs_are_read_back_and_summarized_over_seeds(tmp_path, config, no_training):
    workdir = tmp_path / "cv"
    _write_cv(workdir, folds=(0, 1), seeds=(0, 1))
    summary = cross_validation.run_folds(config, str(workdir), folds=[0, 1], seeds=[1, 0])
    runs = [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert [(r["fold"], r["seed"]) for r in summary["folds"]] == runs
    uas = [metrics.summarize(_confusion(f, s), NAMES)["ua"] for f, s in runs]
    assert summary["mean"]["ua"] == pytest.approx(np.mean(uas))
    assert summary["std"]["ua"] == pytest.approx(np.std(uas, ddof=1))
    assert summary["seeds"] == [0, 1]
    assert [s["mean"]["ua"] for s in summary["per_seed"]] == pytest.approx(
        [np.mean(uas[:2]), np.mean(uas[2:])]
    )
    assert (summary["num_folds"], summary["folds_done"]) == (4, 2)
    assert summary["confusion_matrix"] == sum(_confusion(f, s) for f, s in runs).tolist()
    # The pooled interval: speakers resampled, each seed's pooled UA averaged.
    labels = np.concatenate([_fold_utterances(f)[1] for f in (0, 1)])
    speakers = np.concatenate([_fold_utterances(f)[2] for f in (0, 1)])
    seeds = np.stack([np.concatenate([_predicted(f, s) for f in (0, 1)]) for s in (0, 1)])
    assert summary["ci95"] == statistics.speaker_bootstrap(
        labels, seeds, speakers, 4, RESAMPLES, seed=0
    )
    assert summary["bootstrap"] == {"resamples": RESAMPLES, "seed": 0}
    # Every class has as many utterances in each seed: summed UA = mean of the seeds' pooled UA.
    pooled = [statistics.scores(labels, row, 4)["ua"] for row in seeds]
    assert summary["pooled"]["ua"] == pytest.approx(np.mean(pooled))
    # Each speaker's UA and the calibration, of each seed's pooled predictions, averaged.
    per_seed = [statistics.per_speaker_ua(labels, row, speakers, 4) for row in seeds]
    expected = {s: np.mean([seed[s] for seed in per_seed]) for s in per_seed[0]}
    assert summary["per_speaker_ua"] == pytest.approx(expected)
    worst = min(expected, key=lambda speaker: (expected[speaker], speaker))
    assert summary["worst_speaker"] == {"speaker": worst, "ua": pytest.approx(expected[worst])}
    probabilities = np.full((2, len(labels), 4), 0.1)
    for row, predicted in zip(probabilities, seeds, strict=True):
        row[np.arange(len(labels)), predicted] = 0.7
    calibration = [statistics.calibration(labels, row) for row in probabilities]
    for key in ("ece", "brier"):
        assert summary[key] == pytest.approx(np.mean([c[key] for c in calibration]), abs=1e-6)
    for name in ("summary.json", "ua_by_fold.png", "confusion_matrix.png"):
        assert (workdir / name).exists(), name
    assert json.loads((workdir / "summary.json").read_text()) == summary
    table = cross_validation.format_summary(summary)
    assert "averaged over 2 seeds" in table and "mean UA per seed: seed 0" in table
    low, high = summary["folds"][0]["ua_ci95"]
    assert f"[{100 * low:.2f}, {100 * high:.2f}]" in table.splitlines()[1]

    # Each seed_S is an ordinary cross-validation folder, summarized as such.
    seed_0 = workdir / "seed_0"
    plain = cross_validation.run_folds(config, str(seed_0), folds=[0, 1])
    assert plain == json.loads((seed_0 / "summary.json").read_text())
    assert "seeds" not in plain and (seed_0 / "ua_by_fold.png").exists()
    assert plain["mean"]["ua"] == pytest.approx(np.mean(uas[:2]))

    result = compare.compare(str(workdir), str(workdir), resamples=100)
    assert (result["ua_difference"], result["p_value"], result["num_seeds"]) == (0.0, 1.0, 2)


def _confusion(fold, seed):
    _, labels, _ = _fold_utterances(fold)
    confusion = np.zeros((4, 4), np.int64)
    np.add.at(confusion, (labels, _predicted(fold, seed)), 1)
    return confusion


def test_only_missing_runs_are_trained_with_their_seed(tmp_path, config, monkeypatch):
    workdir = tmp_path / "cv"
    _write_cv(workdir, folds=(0, 1), seeds=(0,))
    _write_cv(workdir, folds=(0,), seeds=(1,))
    trained = []

    def fake_training(run_config_, folder):
        trained.append((run_config_.seed, run_config_.data.fold, folder))
        return _write_fold(tmp_path / "cv" / "seed_1" / "fold_1", 1, 1)

    monkeypatch.setattr(train, "train_and_evaluate", fake_training)
    summary = cross_validation.run_folds(config, str(workdir), folds=[0, 1], seeds=[0, 1])
    assert trained == [(1, 1, str(workdir / "seed_1" / "fold_1"))]
    assert len(summary["folds"]) == 4
    assert config.seed == 0  # the caller's config is left as it was


def test_a_preempted_run_stops_the_seeds(tmp_path, config, monkeypatch):
    trained = []

    def preempted(run_config_, folder):
        trained.append((run_config_.seed, run_config_.data.fold))

    monkeypatch.setattr(train, "train_and_evaluate", preempted)
    workdir = tmp_path / "cv"
    assert cross_validation.run_folds(config, str(workdir), [0, 1], seeds=[0, 1]) is None
    assert trained == [(0, 0)]
    assert not (workdir / "summary.json").exists()


def test_a_seed_folder_of_another_seed_is_refused(tmp_path, config, no_training):
    folder = tmp_path / "cv" / "seed_1" / "fold_0"
    _write_fold(folder, 0, 1)
    fold_config = config.copy_and_resolve_references()
    fold_config.data.fold = 0  # saved under seed 0, found in seed_1
    (folder / "config.json").write_text(json.dumps(run_config.as_json(fold_config)))
    with pytest.raises(run_config.RunConfigError, match=r"seed: 0 -> 1"):
        cross_validation.run_folds(config, str(tmp_path / "cv"), folds=[0], seeds=[1])


def test_without_seeds_the_layout_is_unchanged(tmp_path, config, no_training):
    for fold in (0, 1):
        _write_fold(tmp_path / f"fold_{fold}", fold, 0)
    summary = cross_validation.run_folds(config, str(tmp_path), folds=[0, 1])
    assert "seeds" not in summary and "seed" not in summary["folds"][0]
    assert summary["folds"][1]["ua_ci95"] is not None
    assert (tmp_path / "ua_by_fold.png").exists()
    assert "averaged over" not in cross_validation.format_summary(summary)


def test_seeds_that_differ_in_test_utterances_or_repeat_are_refused(tmp_path, config, no_training):
    _write_fold(tmp_path / "seed_0" / "fold_0", 0, 0)
    _write_fold(tmp_path / "seed_1" / "fold_1", 1, 1)  # seed 1 tests other speakers
    by_seed = [
        [evaluation.read_predictions(str(tmp_path / folder), "test")]
        for folder in ("seed_0/fold_0", "seed_1/fold_1")
    ]
    with pytest.raises(ValueError, match="differ in their test utterances"):
        cross_validation.pooled_interval(by_seed, RESAMPLES, 0)
    with pytest.raises(ValueError, match="distinct"):
        cross_validation.run_folds(config, str(tmp_path), folds=[0], seeds=[0, 0])


@pytest.mark.slow
def test_the_command_trains_each_fold_once_per_seed(tmp_path, tmp_path_factory, monkeypatch):
    data_dir = helpers.prepared_tiny_corpus(tmp_path_factory)
    workdir = tmp_path / "cv"
    done = subprocess.run(
        [
            sys.executable,
            str(helpers.CONFIGS.parent / "tools" / "cross_validate.py"),
            *helpers.tiny_flags(data_dir),
            "--config.num_epochs=1",
            f"--workdir={workdir}",
            "--folds=0",
            "--seeds=0,1",
            "--nomalloc_tunables",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "averaged over 2 seeds" in done.stdout
    for seed in (0, 1):
        saved = json.loads((workdir / f"seed_{seed}" / "fold_0" / "config.json").read_text())
        assert saved["seed"] == seed
    summary = json.loads((workdir / "summary.json").read_text())
    assert [(r["fold"], r["seed"]) for r in summary["folds"]] == [(0, 0), (0, 1)]
    low, high = summary["ci95"]["ua"]
    assert 0.0 <= low <= summary["pooled"]["ua"] <= high <= 1.0
    assert (workdir / "ua_by_fold.png").exists()

    def refuse(*_):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train, "train_and_evaluate", refuse)
    config = helpers.tiny_config(data_dir, num_epochs=1)
    assert cross_validation.run_folds(config, str(workdir), [0], seeds=[0, 1]) == summary
