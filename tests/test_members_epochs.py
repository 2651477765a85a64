"""Tests of stacked members (emohrnet_jax.members) whose folds differ in their epochs: member k
of one program, in blocks of steps, equals its run alone. Apart from tests/test_members.py, so
that pytest-xdist runs the two files side by side."""

import pytest

from emohrnet_jax import members, train
from tests import helpers, members_check

pytestmark = pytest.mark.slow


def test_unequal_epochs_and_a_block_of_steps_equal_the_runs_alone(tmp_path_factory):
    """Folds of 4 and 6 steps per epoch (10 speakers), each with its own warm-up and cosine
    schedule and class weights, in blocks of 4 steps: the shorter epoch and the last block are
    padded."""
    data = tmp_path_factory.mktemp("ten_speakers")
    overrides = {"data.synthetic_speakers": 10, "lr_schedule": "cosine", "warmup_epochs": 0.5}
    config = helpers.tiny_config(data, class_weights="balanced", **overrides)
    configs = []
    for fold in (0, 2):
        fold_config = config.copy_and_resolve_references()
        fold_config.data.fold = fold
        configs.append(fold_config)
    root = tmp_path_factory.mktemp("unequal")
    stacked_dirs = [str(root / f"stacked_{k}") for k in range(2)]
    results, _ = members.train_members(configs, stacked_dirs, steps_per_dispatch=4)
    for k, (fold_config, steps_per_epoch) in enumerate(zip(configs, (4, 6), strict=True)):
        alone = root / f"alone_{k}"
        train.train_and_evaluate(fold_config, str(alone))
        members_check.assert_same_run(root / f"stacked_{k}", alone, fold_config, steps_per_epoch)
        assert results[k]["best_step"] % steps_per_epoch == 0
