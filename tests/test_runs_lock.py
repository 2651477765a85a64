"""Tests of what a run does with a workdir in use, a URL workdir and a preemption (issue 21).

Case 4 (two runs on one workdir) and case 5 (a URL workdir of a scheme other than gs://); the exit
status of a preempted run is tested in a bucket (tests/test_gcs_run.py) and with several hosts.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from emohrnet_jax import cross_validation, locks, rescoring, run_config, train
from tests import helpers
from tests.test_runs_config import last_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)  # once for the module


@pytest.fixture
def held(tmp_path):
    """A workdir locked by another process (as a second training would find it), and its pid."""
    workdir = tmp_path / "run"
    code = (
        "import sys, time\n"
        "from emohrnet_jax import locks\n"
        "with locks.hold(sys.argv[1], 'the workdir'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "held\n"
    yield workdir, process
    process.kill()
    process.wait()


def test_a_second_run_on_a_workdir_in_use_refuses_at_once(data_dir, held):
    workdir, holder = held
    config = helpers.tiny_config(data_dir)
    started = time.perf_counter()
    with pytest.raises(locks.LockedError, match=f"the workdir {workdir} is in use by process "):
        train.train_and_evaluate(config, str(workdir))
    assert time.perf_counter() - started < 5
    with pytest.raises(locks.LockedError, match=f"in use by process {holder.pid} "):
        rescoring.evaluate_run(config, str(workdir), "test")
    assert sorted(os.listdir(workdir)) == [".lock"]


def test_the_lock_of_a_killed_run_does_not_block(data_dir, held):
    workdir, holder = held
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # Past the lock, the next check (another config's run in the folder) is the one that answers.
    other = helpers.tiny_config(data_dir, learning_rate=0.5)
    (workdir / "config.json").write_text(json.dumps(run_config.as_json(other)))
    with pytest.raises(run_config.RunConfigError, match="learning_rate"):
        train.train_and_evaluate(helpers.tiny_config(data_dir), str(workdir))


def test_cross_validation_holds_its_workdir(data_dir, held):
    workdir, holder = held
    with pytest.raises(locks.LockedError, match=f"in use by process {holder.pid} "):
        cross_validation.run_folds(helpers.tiny_config(data_dir), str(workdir), folds=[0])


def test_main_names_the_process_holding_the_workdir(data_dir, held):
    workdir, holder = held
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emohrnet_jax.main",
            *helpers.tiny_flags(data_dir),
            f"--workdir={workdir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line(result.stderr).startswith(
        f"error: the workdir {workdir} is in use by process {holder.pid} on "
    )


@pytest.mark.parametrize("command", [["-m", "emohrnet_jax.main"], ["tools/cross_validate.py"]])
def test_a_workdir_url_of_another_scheme_is_refused_before_anything_is_written(
    data_dir, tmp_path, command
):
    if command[0].startswith("tools/"):
        command = [str(helpers.CONFIGS.parent / command[0])]
    env = {**os.environ, "PYTHONPATH": str(helpers.CONFIGS.parent)}
    result = subprocess.run(
        [sys.executable, *command, *helpers.tiny_flags(data_dir), "--workdir=s3://bucket/x"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line(result.stderr) == (
        "error: --workdir=s3://bucket/x: s3:// is not supported; give a local path or a gs:// URL"
    )
    assert os.listdir(tmp_path) == []


def test_cross_validation_stops_at_a_preempted_fold(data_dir, tmp_path, monkeypatch):
    trained = []

    def preempted(config, workdir):
        trained.append(config.data.fold)

    monkeypatch.setattr(train, "train_and_evaluate", preempted)
    assert cross_validation.run_folds(helpers.tiny_config(data_dir), str(tmp_path), [0, 1]) is None
    assert trained == [0]  # the next fold did not start
