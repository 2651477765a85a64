"""Tests of stacked members (emohrnet_jax.members): member k of one program equals its run alone,
other seeds, a kill and resume, and `cross_validate --members_per_program`'s summary (unequal
epochs: tests/test_members_epochs.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from emohrnet_jax import checkpoints, cross_validation, members, train
from tests import helpers, members_check

pytestmark = pytest.mark.slow

FOLDS = [0, 1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def sequential(data_dir, tmp_path_factory):
    """Folds 0 and 1 cross-validated one after the other: the reference."""
    workdir = tmp_path_factory.mktemp("sequential")
    cross_validation.run_folds(helpers.tiny_config(data_dir), str(workdir), folds=FOLDS)
    return workdir


@pytest.fixture(scope="module")
def stacked(data_dir, tmp_path_factory):
    """The same folds trained as two members of one program."""
    workdir = tmp_path_factory.mktemp("stacked")
    config = helpers.tiny_config(data_dir)
    cross_validation.run_folds(config, str(workdir), folds=FOLDS, members_per_program=2)
    return workdir


def _approx(a, b, path="summary"):
    """Equal JSON trees, floats to 1e-5 (probabilities' rounding, as the parameters')."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _approx(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _approx(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7), path
    else:
        assert a == b, path


def _summary(workdir):
    return json.loads((workdir / "summary.json").read_text())


def test_each_member_equals_its_fold_trained_alone(sequential, stacked, data_dir):
    config = helpers.tiny_config(data_dir)
    for fold in FOLDS:
        name = f"fold_{fold}"
        members_check.assert_same_run(stacked / name, sequential / name, config, steps_per_epoch=4)


def test_the_stacked_summary_equals_the_sequential_one(sequential, stacked):
    _approx(_summary(stacked), _summary(sequential))
    report = json.loads((stacked / "members.json").read_text())
    (program,) = report["programs"]
    assert [os.path.basename(w) for w in program["workdirs"]] == ["fold_0", "fold_1"]
    per_member = program["per_member"]
    assert per_member["params_bytes"] > 0
    assert per_member["opt_state_bytes"] >= 2 * per_member["params_bytes"]  # AdamW's mu and nu
    assert program["total"] == {k: 2 * v for k, v in per_member.items()}


def test_members_must_share_the_config_but_seed_and_fold(data_dir, tmp_path):
    configs = [helpers.tiny_config(data_dir), helpers.tiny_config(data_dir, learning_rate=0.1)]
    with pytest.raises(ValueError, match="only in seed and data"):
        members.train_members(configs, [str(tmp_path / "a"), str(tmp_path / "b")])


def test_killed_and_resumed_equals_uninterrupted(sequential, data_dir, tmp_path):
    tool = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "cross_validate.py")
    command = [
        sys.executable,
        tool,
        *helpers.tiny_flags(data_dir),
        f"--workdir={tmp_path}",
        "--folds=0,1",
        "--members_per_program=2",
        "--nomalloc_tunables",
    ]
    process = subprocess.Popen(command, env=os.environ, stderr=subprocess.PIPE, text=True)
    first_epoch = tmp_path / "fold_1" / "checkpoints" / "4"  # saved after fold 0's
    deadline = time.time() + 300
    while not first_epoch.is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr[-2000:]
    assert not (tmp_path / "fold_0" / "results.json").exists()
    config = helpers.tiny_config(data_dir)
    cross_validation.run_folds(config, str(tmp_path), folds=FOLDS, members_per_program=2)
    for fold in FOLDS:
        name = f"fold_{fold}"
        members_check.assert_same_run(tmp_path / name, sequential / name, config, steps_per_epoch=4)
    _approx(_summary(tmp_path), _summary(sequential))


def test_preempted_mid_epoch_and_resumed_equals_uninterrupted(
    sequential, data_dir, tmp_path, monkeypatch
):
    # SIGTERM noticed after the third step of epoch 1: both members saved at step 3.
    monkeypatch.setattr(train.Preemption, "reached", lambda self, start: start == 2)
    config = helpers.tiny_config(data_dir)
    assert (
        cross_validation.run_folds(config, str(tmp_path), folds=FOLDS, members_per_program=2)
        is None
    )
    for fold in FOLDS:
        manager = checkpoints.create_manager(str(tmp_path / f"fold_{fold}"), 2)
        assert manager.latest_step() == 3
    monkeypatch.undo()
    cross_validation.run_folds(config, str(tmp_path), folds=FOLDS, members_per_program=2)
    for fold in FOLDS:
        name = f"fold_{fold}"
        members_check.assert_same_run(tmp_path / name, sequential / name, config, steps_per_epoch=4)


def test_two_seeds_of_a_fold_equal_their_runs_alone(sequential, data_dir, tmp_path):
    """Members of other seeds: other initial parameters, data orders and augmentation keys."""
    config = helpers.tiny_config(data_dir)
    cross_validation.run_folds(
        config, str(tmp_path), folds=[0], seeds=[0, 1], members_per_program=2, steps_per_dispatch=3
    )
    seed_1 = config.copy_and_resolve_references()
    seed_1.seed, seed_1.data.fold = 1, 0
    train.train_and_evaluate(seed_1, str(tmp_path / "alone_seed_1"))
    members_check.assert_same_run(tmp_path / "seed_0" / "fold_0", sequential / "fold_0", config, 4)
    alone = tmp_path / "alone_seed_1"
    members_check.assert_same_run(tmp_path / "seed_1" / "fold_0", alone, seed_1, 4)
    summary = _summary(tmp_path)
    assert [(run["fold"], run["seed"]) for run in summary["folds"]] == [(0, 0), (0, 1)]
