"""Tests of damaged checkpoints: resume falls back to an older one, loading names the file.

Issue 21, case 6. The damage is what a full disk, a crash mid-copy or an editor leaves in orbax's
step folder (`<step>/state/` holds `_METADATA`, `manifest.ocdbt` and the OCDBT data files under
`d/` and `ocdbt.process_0/d/`; `<step>/history/metadata` is the JSON history).
"""

import glob
import logging
import os
import shutil
from typing import Any

import chex
import jax
import pytest
from flax.training import train_state

from emohrnet_jax import checkpoints, models, runs, steps, train
from emohrnet_jax.data import loading
from tests import helpers, saved_run


def _truncate(path):
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


def _empty(path):
    open(path, "w").close()


def _largest_data_file(step_dir):
    return max(glob.glob(f"{step_dir}/state/**/d/*", recursive=True), key=os.path.getsize)


# name: (damage of a step folder, the file or folder that the message must name)
DAMAGE = {
    "truncated data file": (lambda s: _truncate(_largest_data_file(s)), "{s}/state/"),
    "emptied manifest": (lambda s: _empty(f"{s}/state/manifest.ocdbt"), "{s}/state/manifest.ocdbt"),
    "emptied array metadata": (lambda s: _empty(f"{s}/state/_METADATA"), "{s}/state/_METADATA"),
    "emptied history": (lambda s: _empty(f"{s}/history/metadata"), "{s}/history/metadata"),
    "deleted state": (lambda s: shutil.rmtree(f"{s}/state"), "{s}/state is damaged"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch tiny run keeping both epochs' checkpoints (steps 4 and 8)."""
    data_dir = tmp_path_factory.mktemp("synthetic")
    config = helpers.tiny_config(data_dir, keep_checkpoints=2)
    loading.load_builder(config.data)
    workdir = tmp_path_factory.mktemp("trained")
    results = train.train_and_evaluate(config, str(workdir))
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]
    return config, workdir, results


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_past_a_damaged_latest_checkpoint(trained, tmp_path, caplog, damage):
    config, original, results = trained
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    os.remove(workdir / "results.json")
    step_dir = str(workdir / "checkpoints" / "8")
    damage_step, named = DAMAGE[damage]
    damage_step(step_dir)
    with caplog.at_level(logging.WARNING):
        resumed = train.train_and_evaluate(config, str(workdir))
    skipped = [
        r.getMessage() for r in caplog.records if "Skipped checkpoint step" in r.getMessage()
    ]
    assert len(skipped) == 1 and skipped[0].startswith("Skipped checkpoint step 8: ")
    assert named.format(s=step_dir) in skipped[0]
    assert os.path.isdir(workdir / "checkpoints_damaged" / "8")  # kept, out of orbax's way
    # Epoch 2 was trained again from step 4, as the original run trained it.
    for split in ("validation", "test"):
        assert resumed[split]["confusion_matrix"] == results[split]["confusion_matrix"]
    assert resumed["best_epoch"] == results["best_epoch"]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]


@pytest.mark.slow
def test_a_safe_change_resumes_the_run(trained, tmp_path):
    config, original, _ = trained
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    longer = helpers.tiny_config(config.data.data_dir, keep_checkpoints=3, num_epochs=3)
    train.train_and_evaluate(longer, str(workdir))
    manager = checkpoints.create_manager(str(workdir), keep_latest=3)
    assert manager.all_steps() == [4, 8, 12]
    assert [r["epoch"] for r in checkpoints.restore_history(manager, 12)] == [1, 2, 3]
    assert runs.load_config(str(workdir)).num_epochs == 3  # the next run compares with this


@pytest.fixture
def saved_copy(saved_run, tmp_path):
    """A copy of conftest's saved run: best state at step 4, latest (lower UA) at step 8."""
    workdir = tmp_path / "run"
    shutil.copytree(saved_run.workdir, workdir)
    return workdir, saved_run.config.copy_and_resolve_references()


def test_loading_reads_the_history_from_an_older_step(saved_copy):
    workdir, config = saved_copy
    _empty(workdir / "checkpoints" / "8" / "history" / "metadata")
    _, best = runs.load_best_variables(str(workdir), config)
    assert best["step"] == 4


@pytest.mark.parametrize("damage", ["truncated data file", "emptied array metadata"])
def test_loading_a_damaged_best_state_names_the_file(saved_copy, damage):
    workdir, config = saved_copy
    step_dir = str(workdir / "checkpoints" / "4")
    damage_step, named = DAMAGE[damage]
    damage_step(step_dir)
    with pytest.raises(runs.RunError) as raised:
        runs.load_best_variables(str(workdir), config)
    message = str(raised.value)
    assert named.format(s=step_dir) in message and "is damaged" in message
    assert "does not fit" not in message
    assert os.path.isdir(step_dir)  # a reader moves nothing


def test_a_checkpoint_of_another_model_still_does_not_fit(saved_copy):
    workdir, config = saved_copy
    config.model.variant = "small"
    with pytest.raises(runs.RunError, match=r"does not fit the model of its config\.json"):
        runs.load_best_variables(str(workdir), config)


class _FlaxTrainState(train_state.TrainState):
    """The state that checkpoints held before the model and optimizer left it (flax's)."""

    batch_stats: Any


def test_a_checkpoint_of_flax_train_state_restores(tmp_path):
    config = saved_run.config()
    state = saved_run.random_state(config, seed=2)
    old = _FlaxTrainState(
        step=state.step,
        apply_fn=models.create_model(config).apply,
        params=state.params,
        tx=steps.create_optimizer(config, steps_per_epoch=4),
        opt_state=state.opt_state,
        batch_stats=state.batch_stats,
    )
    manager = checkpoints.create_manager(str(tmp_path), keep_latest=2)
    checkpoints.save(manager, 4, old, [{"epoch": 1, "step": 4, "validation_ua": 0.5}], 0.5)
    manager.wait_until_finished()
    like = jax.device_put(saved_run.random_state(config, seed=3))
    restored, history = checkpoints.restore(manager, 4, like)
    assert isinstance(restored, steps.TrainState) and history[0]["step"] == 4
    chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
