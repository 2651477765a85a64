"""Tests of the Cloud TPU launcher (emohrnet_jax.cloud_tpu, tools/tpu.py): its gcloud commands."""

import os
import shlex
import subprocess
import sys

import pytest

from emohrnet_jax import cloud_tpu
from tests import helpers

REPO = helpers.CONFIGS.parent
TRAIN = (
    "--config=configs/iemocap.py",
    "--workdir=gs://bucket/runs/iemocap_fold0",
    "--config.data.data_dir=gs://bucket/tfds",
)


def _job(accelerator_type: str = "v4-8", **fields) -> cloud_tpu.Job:
    fields.setdefault("train_args", TRAIN)
    return cloud_tpu.Job(
        name="emo", zone="us-central2-b", slice=cloud_tpu.parse_slice(accelerator_type), **fields
    )


def _worker(argv: tuple[str, ...]) -> str:
    (worker,) = [arg for arg in argv if arg.startswith("--worker=")]
    return worker


def _remote(argv: tuple[str, ...]) -> str:
    (command,) = [arg for arg in argv if arg.startswith("--command=")]
    return command.removeprefix("--command=")


@pytest.mark.parametrize(
    ("accelerator_type", "chips", "hosts", "runtime_version"),
    [
        ("v4-8", 4, 1, "tpu-ubuntu2204-base"),
        ("v4-32", 16, 4, "tpu-ubuntu2204-base"),
        ("v5litepod-8", 8, 1, "v2-alpha-tpuv5-lite"),
        ("v5litepod-16", 16, 4, "v2-alpha-tpuv5-lite"),
        ("v5p-8", 4, 1, "v2-alpha-tpuv5"),
        ("v6e-8", 8, 1, "v2-alpha-tpuv6e"),
    ],
)
def test_accelerator_types_name_their_chips_hosts_and_software(
    accelerator_type, chips, hosts, runtime_version
):
    slice_ = cloud_tpu.parse_slice(accelerator_type)
    assert (slice_.chips, slice_.hosts, slice_.runtime_version) == (chips, hosts, runtime_version)
    assert slice_.multi_host == (hosts > 1)


@pytest.mark.parametrize("accelerator_type", ["v4-12", "v4-9", "v4-4", "v5litepod-12", "v9-8", "x"])
def test_an_unknown_accelerator_type_is_a_one_line_error(accelerator_type):
    with pytest.raises(cloud_tpu.LaunchError, match="--accelerator_type=") as error:
        cloud_tpu.parse_slice(accelerator_type)
    assert "\n" not in str(error.value)


def test_a_v4_8_job_creates_one_host_and_trains_there_without_distributed():
    job = _job("v4-8")
    (create,) = [step.argv for step in cloud_tpu.create_steps(job)]
    assert create[:6] == ("gcloud", "compute", "tpus", "tpu-vm", "create", "emo")
    assert {"--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base"} <= set(create)
    assert "--zone=us-central2-b" in create
    (train,) = [step.argv for step in cloud_tpu.train_steps(job)]
    assert _worker(train) == "--worker=all"
    assert cloud_tpu.training_command(job) == [
        ".venv/bin/python",
        "-m",
        "emohrnet_jax.main",
        *TRAIN,
    ]
    assert "--distributed" not in _remote(train)
    assert "1 host" in cloud_tpu.plan_lines(job, [])[0]


def test_a_v4_32_job_runs_every_step_on_every_worker_and_trains_distributed():
    job = _job("v4-32")
    steps = cloud_tpu.run_steps(job)
    gcloud = [step.argv for step in steps if step.argv[0] == "gcloud"]
    create, copy, install, train, logs = gcloud
    assert "--accelerator-type=v4-32" in create
    assert all("--zone=us-central2-b" in argv for argv in gcloud)
    assert [_worker(argv) for argv in (copy, install, train)] == ["--worker=all"] * 3
    assert _worker(logs) == "--worker=0"
    assert "pip install --python=.venv/bin/python -e '.[tpu]'" in _remote(install)
    expected = shlex.join(cloud_tpu.training_command(job))
    assert expected.endswith("--config.data.data_dir=gs://bucket/tfds --distributed")
    assert "--workdir=gs://bucket/runs/iemocap_fold0" in expected
    # In the background, immune to the ssh session's end, its log on the worker's disk.
    script = expected + '; echo "emohrnet_jax exit status: $?"'
    assert f"nohup sh -c {shlex.quote(script)}" in _remote(train)
    assert f"> {cloud_tpu.LOG_FILE} 2>&1 < /dev/null &" in _remote(train)
    assert cloud_tpu.LOG_FILE in _remote(logs)
    plan = cloud_tpu.plan_lines(job, steps)
    assert "4 hosts (multi-host)" in plan[0] and "--worker=all" in plan[0]
    assert len(plan) == 1 + len(steps)


def test_the_delete_command_names_the_tpu_vm_or_the_queued_resource():
    (delete,) = [step.argv for step in cloud_tpu.delete_steps(_job("v4-32"))]
    assert delete == (
        "gcloud", "compute", "tpus", "tpu-vm", "delete", "emo", "--quiet", "--zone=us-central2-b"
    )  # fmt: skip
    (delete,) = [step.argv for step in cloud_tpu.delete_steps(_job(queued=True, project="p"))]
    assert delete[3:6] == ("queued-resources", "delete", "emo")
    assert {"--force", "--quiet", "--project=p"} <= set(delete)


def test_a_queued_spot_slice_is_requested_then_waited_for():
    job = _job("v5litepod-16", queued=True, spot=True)
    create, wait = cloud_tpu.create_steps(job)
    assert create.argv[3:6] == ("queued-resources", "create", "emo")
    assert {"--node-id=emo", "--runtime-version=v2-alpha-tpuv5-lite", "--spot"} <= set(create.argv)
    assert wait.wait_for == "ACTIVE" and "describe" in wait.argv
    states = iter(["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"])
    ran, slept = [], []
    cloud_tpu.execute(
        job, [wait], runner=lambda step: ran.append(step) or next(states), sleep=slept.append
    )
    assert len(ran) == 3 and len(slept) == 2
    with pytest.raises(cloud_tpu.LaunchError, match="FAILED"):
        cloud_tpu.execute(job, [wait], runner=lambda step: "FAILED\n", sleep=slept.append)


@pytest.mark.parametrize(
    ("train_args", "message"),
    [
        (("--config=configs/iemocap.py", "--workdir=runs/fold0"), "--workdir=runs/fold0: a TPU"),
        (("--config=configs/iemocap.py",), "--workdir=None: a TPU"),
        (("--workdir=gs://bucket/run",), "need --config"),
    ],
)
def test_a_training_command_without_a_gs_workdir_or_a_config_is_refused(train_args, message):
    with pytest.raises(cloud_tpu.LaunchError, match=message) as error:
        cloud_tpu.run_steps(_job("v4-32", train_args=train_args))
    assert "\n" not in str(error.value)


def test_a_dry_run_prints_every_command_and_runs_none(capsys):
    job = _job("v4-32")
    steps = cloud_tpu.run_steps(job)

    def runner(step):
        raise AssertionError(f"ran {step.argv}")

    cloud_tpu.execute(job, steps, dry_run=True, runner=runner)
    lines = capsys.readouterr().out.splitlines()
    assert lines == cloud_tpu.plan_lines(job, steps)
    assert [shlex.split(line) for line in lines[1:]] == [list(step.argv) for step in steps]


def test_without_gcloud_a_real_run_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(cloud_tpu.LaunchError, match="gcloud not found"):
        cloud_tpu.execute(_job(), cloud_tpu.delete_steps(_job()))


@pytest.mark.slow
def test_the_tool_dry_run_needs_no_gcloud(tmp_path):
    command = [sys.executable, str(REPO / "tools" / "tpu.py")]
    flags = ["--name=emo", "--zone=us-central2-b", "--accelerator_type=v4-32"]
    # PATH without gcloud: the dry run must not look for it.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": str(tmp_path)}
    run = subprocess.run(
        [*command, "run", *flags, "--dry_run", "--", *TRAIN],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("# v4-32: 16 chips on 4 hosts")
    assert lines[1].startswith("gcloud compute tpus tpu-vm create emo --accelerator-type=v4-32")
    assert "--distributed" in lines[-2] and "--worker=0" in lines[-1]
    bad = subprocess.run(
        [*command, "train", *flags, "--", "--config=configs/iemocap.py", "--workdir=/tmp/run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "tpu train: --workdir=/tmp/run: a TPU job's workdir must be gs://BUCKET/..., which every "
        "worker sees and which outlives the TPU VM"
    ]


@pytest.mark.slow  # tail --pid looks at the process once a second.
def test_the_worker_commands_train_in_the_background_and_follow_the_log_to_its_end(tmp_path):
    """The remote shell of `train` and `logs`, run here in a home folder with a stand-in Python."""
    python = tmp_path / "emohrnet_jax" / cloud_tpu.PYTHON
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "main $*"\nsleep 1\nexit 3\n')
    python.chmod(0o755)
    job = _job("v4-32")
    env = {**os.environ, "HOME": str(tmp_path)}
    (train,) = cloud_tpu.train_steps(job)
    started = subprocess.run(["bash", "-c", _remote(train.argv)], env=env, timeout=10)
    assert started.returncode == 0
    (logs,) = cloud_tpu.logs_steps(job)
    log = subprocess.run(
        ["bash", "-c", _remote(logs.argv)], env=env, capture_output=True, text=True, timeout=10
    )
    assert log.stdout.splitlines() == [
        f"main -m emohrnet_jax.main {' '.join(TRAIN)} --distributed",
        "emohrnet_jax exit status: 3",
    ]
