"""Tests of the checks before a run writes anything: its config, the saved config and speakers.

Issue 21, case 2 (a re-run with another config), and config mistakes found before the slow imports.
"""

import json
import subprocess
import sys

import pytest

from emohrnet_jax import config_check, cross_validation, run_config, train
from emohrnet_jax.data import pipeline, splits
from tests import helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)  # once for the module


def _saved_run(workdir, config):
    """A workdir as training leaves it after its first write: config.json and splits.json."""
    workdir.mkdir(exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(run_config.as_json(config)))
    fold = pipeline.create_fold_input(config)
    splits.save_splits(str(workdir / "splits.json"), "synthetic", 0, fold.speakers)
    return {name: (workdir / name).read_bytes() for name in ("config.json", "splits.json")}


def _differences(saved_config, **changes):
    new = helpers.tiny_config("/data", **changes)
    return run_config.differences(run_config.as_json(saved_config), run_config.as_json(new))


def test_only_the_safe_fields_may_change():
    saved = helpers.tiny_config("/data")
    assert _differences(saved) == []
    safe = {
        "num_epochs": 5,
        "keep_checkpoints": 4,
        "data.data_dir": "/elsewhere",
        "cross_corpus.dataset": "ravdess",
        "model.im2col": "on",
    }
    assert _differences(saved, **safe) == []
    assert _differences(saved, batch_size=16, learning_rate=0.5) == [
        "learning_rate: 0.001 -> 0.5",
        "batch_size: 8 -> 16",
    ]
    assert _differences(saved, **{"model.variant": "small"}) == ["model.variant: 'tiny' -> 'small'"]


def test_num_epochs_is_safe_only_when_the_schedule_ignores_it():
    for schedule in ({"lr_schedule": "cosine"}, {"warmup_epochs": 1.0}):
        saved = helpers.tiny_config("/data", **schedule)
        assert _differences(saved, num_epochs=5, **schedule) == ["num_epochs: 2 -> 5"]


def test_fields_missing_from_an_older_config_json_compare_as_their_default():
    config = helpers.tiny_config("/data")
    saved = run_config.as_json(config)
    del saved["augment"]["mask_value"], saved["model"]["im2col"]
    new = run_config.as_json(config)
    assert run_config.differences(saved, new) == []
    new["augment"]["mask_value"] = "zero"
    assert run_config.differences(saved, new) == ["augment.mask_value: 'mean' -> 'zero'"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [{"model.variant": "small"}, {"batch_size": 16}, {"learning_rate": 0.01}],
)
def test_training_refuses_another_config_and_writes_nothing(data_dir, tmp_path, changes):
    before = _saved_run(tmp_path, helpers.tiny_config(data_dir))
    field = next(iter(changes))
    with pytest.raises(run_config.RunConfigError, match=f"{field}: "):
        train.train_and_evaluate(helpers.tiny_config(data_dir, **changes), str(tmp_path))
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_training_refuses_a_rebuilt_corpus(data_dir, tmp_path):
    """The same speakers from a build prepared again (its sources changed) is other data."""
    before = _saved_run(tmp_path, helpers.tiny_config(data_dir))
    saved = json.loads(before["splits.json"])
    saved["build"] = "0123456789abcdef"
    (tmp_path / "splits.json").write_text(json.dumps(saved))
    with pytest.raises(run_config.RunConfigError, match=r"another build of synthetic .*0123"):
        train.train_and_evaluate(helpers.tiny_config(data_dir), str(tmp_path))
    assert json.loads((tmp_path / "splits.json").read_text()) == saved
    run_config.check_splits(str(tmp_path), {"train": saved["train"]}, "0123456789abcdef")


@pytest.mark.slow
def test_training_refuses_other_speakers(data_dir, tmp_path):
    before = _saved_run(tmp_path, helpers.tiny_config(data_dir))
    saved = json.loads(before["splits.json"])
    saved["test"] = saved["train"][:2]
    (tmp_path / "splits.json").write_text(json.dumps(saved))
    with pytest.raises(run_config.RunConfigError, match=r"other speakers .*test: "):
        train.train_and_evaluate(helpers.tiny_config(data_dir), str(tmp_path))
    assert (tmp_path / "config.json").read_bytes() == before["config.json"]
    assert json.loads((tmp_path / "splits.json").read_text()) == saved


def _main(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "emohrnet_jax.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def last_line(stderr):
    """The last line of stderr, once it is known to hold no traceback (logs may come before)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_main_refuses_another_config_in_one_line(data_dir, tmp_path):
    before = _saved_run(tmp_path, helpers.tiny_config(data_dir))
    result = _main(*helpers.tiny_flags(data_dir), f"--workdir={tmp_path}", "--config.batch_size=16")
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line(result.stderr) == (
        f"error: {tmp_path} holds a run of another config (batch_size: 8 -> 16): give a new "
        "--workdir, or the saved values (only num_epochs, keep_checkpoints, data.data_dir, "
        "cross_corpus, model.im2col, bootstrap_resamples, temperature_scaling may change on a "
        "resume)"
    )
    assert (tmp_path / "config.json").read_bytes() == before["config.json"]


@pytest.mark.slow
def test_cross_validation_refuses_a_finished_fold_of_another_config(data_dir, tmp_path):
    fold = tmp_path / "fold_0"
    fold.mkdir()
    old = helpers.tiny_config(data_dir, learning_rate=0.01)
    (fold / "config.json").write_text(json.dumps(run_config.as_json(old)))
    (fold / "results.json").write_text(json.dumps({"fold": 0}))
    with pytest.raises(run_config.RunConfigError, match=r"learning_rate: 0\.01 -> 0\.001"):
        cross_validation.run_folds(helpers.tiny_config(data_dir), str(tmp_path), folds=[0])
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr_schedule": "cosine", "warmup_epochs": 2.0}, "warmup_epochs=2.0 must be shorter"),
        ({"lr_schedule": "linear"}, "lr_schedule='linear' is not one of"),
        ({"model.dtype": "float64"}, "model.dtype='float64' is not one of"),
        ({"model.im2col": "yes"}, "model.im2col='yes' is not one of"),
        ({"augment.mask_value": "min"}, "augment.mask_value='min' is not one of"),
        ({"model.num_classes": 5}, "num_classes=5 but config.data.class_names lists 4"),
        ({"batch_size": 0}, "batch_size=0 must be >= 1"),
        ({"num_epochs": 0}, "num_epochs=0 must be >= 1"),
    ],
)
def test_config_mistakes_name_the_field(changes, message):
    with pytest.raises(config_check.ConfigError, match=message):
        config_check.check(helpers.tiny_config("/data", **changes))


@pytest.mark.slow
def test_main_reports_a_config_mistake_before_importing_tensorflow(tmp_path):
    # The demo's 1 warm-up epoch in a 1-epoch cosine run: optax's "requires positive
    # decay_steps, got 0" after the imports and the data, before.
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "emohrnet_jax.main",
            f"--config={helpers.CONFIGS / 'demo.py'}",
            f"--workdir={tmp_path / 'run'}",
            "--config.num_epochs=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "tensorflow" not in imported and "emohrnet_jax.train" not in imported
    # Nothing else is printed before the imports: the error is the only line.
    assert [line for line in result.stderr.splitlines() if not line.startswith("import time")] == [
        "error: config.warmup_epochs=1.0 must be shorter than config.num_epochs=1 with the cosine "
        "schedule: lower the warm-up or raise num_epochs"
    ]
    assert not (tmp_path / "run").exists()


def test_a_run_saved_before_whole_utterance_evaluation_resumes_only_with_the_centre_crop():
    config = helpers.load_config("demo")
    saved = run_config.as_json(config)
    del saved["evaluation"], saved["temperature_scaling"]  # as a config.json of then
    assert run_config.differences(saved, run_config.as_json(config)) == [
        "evaluation: 'centre_crop' -> 'utterance'"
    ]
    config.evaluation = "centre_crop"
    assert run_config.differences(saved, run_config.as_json(config)) == []


def test_a_split_of_other_utterances_of_the_same_speakers_is_refused(tmp_path):
    speakers = {"train": ["s1", "s2"], "validation": ["s3"], "test": ["s4"]}
    saved = {"dataset": "synthetic", "build": None, "split_fingerprint": "a" * 64, **speakers}
    (tmp_path / "splits.json").write_text(json.dumps(saved))
    run_config.check_splits(str(tmp_path), speakers, None, "a" * 64)
    with pytest.raises(run_config.RunConfigError, match="other utterances of the same speakers"):
        run_config.check_splits(str(tmp_path), speakers, None, "b" * 64)
    del saved["split_fingerprint"]  # a run saved before splits were fingerprinted
    (tmp_path / "splits.json").write_text(json.dumps(saved))
    run_config.check_splits(str(tmp_path), speakers, None, "b" * 64)
