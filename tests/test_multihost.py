"""Several hosts on this machine: processes joined by `jax.distributed` on 127.0.0.1 (gloo).

Two processes of 2 fake CPU devices each train the tiny config, one of them is preempted with
SIGTERM, both resume to the end, and the run is compared with one process of 4 devices and the
same global batch (12, so that the 16 validation and test examples leave a padded last batch).
"""

import functools
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from emohrnet_jax import checkpoints, steps
from tests import helpers

pytestmark = pytest.mark.slow

BATCH_SIZE = 12  # 32 training examples: 2 steps an epoch, 4 in all
TIMEOUT = 420  # seconds for a run (compiling the steps dominates)
# gloo sums across processes in another order than one process does: measured here, the
# parameters after 4 steps differ by at most 3.9e-6 (batch statistics 3.6e-6).
TOLERANCE = {"rtol": 1e-5, "atol": 2e-5}

# Logs every file that this process opens for writing, or renames onto, inside the workdir: which
# process wrote what, on a folder the processes share.
_SITECUSTOMIZE = """
import os, sys
_root = os.environ["EMOHRNET_TEST_WORKDIR"]
_log = open(os.environ["EMOHRNET_TEST_WRITES"], "a", buffering=1)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT
def _hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(_root):
        if any(c in (args[1] or "") for c in "wax+") or (args[2] or 0) & _WRITE:
            _log.write(os.path.relpath(args[0], _root) + "\\n")
    elif event == "os.rename" and str(args[1]).startswith(_root):
        _log.write(os.path.relpath(str(args[1]), _root) + "\\n")
sys.addaudithook(_hook)
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _flags(data_dir) -> list[str]:
    flags = [f for f in helpers.tiny_flags(data_dir) if not f.startswith("--config.batch_size")]
    return [*flags, f"--config.batch_size={BATCH_SIZE}"]


def _start(data_dir, workdir: pathlib.Path, processes: int, devices: int) -> list[dict]:
    """Starts the run's processes (`processes` > 1: with --distributed on a free port)."""
    workdir.mkdir(exist_ok=True)
    logs = workdir.parent / f"{workdir.name}_logs"
    logs.mkdir(exist_ok=True)
    (logs / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    xla_flags = [f for f in os.environ["XLA_FLAGS"].split() if "device_count" not in f]
    command = [sys.executable, "-m", "emohrnet_jax.main", *_flags(data_dir), f"--workdir={workdir}"]
    if processes > 1:
        address = f"127.0.0.1:{_free_port()}"
        command += ["--distributed", f"--coordinator_address={address}"]
        command.append(f"--num_processes={processes}")
    started = []
    for i in range(processes):
        attempt = len(list(logs.glob(f"output.{i}.*")))
        env = {
            **os.environ,  # conftest's compilation cache and XLA settings
            "XLA_FLAGS": " ".join(
                [*xla_flags, f"--xla_force_host_platform_device_count={devices}"]
            ),
            "PYTHONPATH": os.pathsep.join([str(logs), os.environ.get("PYTHONPATH", "")]),
            "EMOHRNET_TEST_WORKDIR": str(workdir) + os.sep,
            "EMOHRNET_TEST_WRITES": str(logs / f"writes.{i}"),
        }
        args = [*command, f"--process_id={i}"] if processes > 1 else command
        output = logs / f"output.{i}.{attempt}"
        with open(output, "w") as file:
            process = subprocess.Popen(args, env=env, stdout=file, stderr=subprocess.STDOUT)
        started.append({"process": process, "output": output, "writes": logs / f"writes.{i}"})
    return started


def _wait(started: list[dict]) -> list[tuple[int, str]]:
    """Each process's exit status and output; kills them all past `TIMEOUT`."""
    deadline = time.time() + TIMEOUT
    try:
        for run in started:
            run["process"].wait(timeout=max(deadline - time.time(), 1))
    finally:
        for run in started:
            if run["process"].poll() is None:
                run["process"].kill()
                run["process"].wait()
    return [(run["process"].returncode, run["output"].read_text()) for run in started]


def _assert_done(outcome: list[tuple[int, str]]) -> None:
    for status, output in outcome:
        assert status == 0, output[-3000:]


def _state(workdir, data_dir):
    """The latest train state saved in `workdir`, read here."""
    like = steps.create_train_state(helpers.tiny_config(data_dir, batch_size=BATCH_SIZE), 2)
    manager = checkpoints.create_manager(str(workdir), keep_latest=2)
    return checkpoints.restore_state(manager, manager.latest_step(), like)


def _assert_same_params(a, b):
    for tree_a, tree_b in ((a.params, b.params), (a.batch_stats, b.batch_stats)):
        jax.tree.map(functools.partial(np.testing.assert_allclose, **TOLERANCE), tree_a, tree_b)


def _preempted_step(output: str) -> int:
    found = re.findall(r"Preempted: saved step (\d+)", output)
    assert len(found) == 1, output[-3000:]
    return int(found[0])


def _stop_one_host(started: list[dict], workdir: pathlib.Path) -> list[tuple[int, str]]:
    """SIGTERM to process 1 once the run is under way; every process's status and output."""
    deadline = time.time() + TIMEOUT
    # Process 0 writes config.json once both met past jax.distributed.initialize: from then on
    # JAX's preemption notifier, not the default action, handles their SIGTERM.
    while not (workdir / "config.json").exists() and time.time() < deadline:
        assert all(run["process"].poll() is None for run in started), _wait(started)
        time.sleep(0.05)
    started[1]["process"].send_signal(signal.SIGTERM)
    return _wait(started)


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """One process with 4 devices, and beside it 2 processes with 2 each, stopped by SIGTERM to
    one of them and re-run to the end."""
    root = tmp_path_factory.mktemp("multihost")
    one, two = root / "one_host", root / "two_hosts"
    reference = _start(data_dir, one, 1, 4)
    # The two hosts' corpus is not prepared yet: process 0 builds it while process 1 waits.
    preempted = _stop_one_host(_start(root / "synthetic", two, 2, 2), two)
    latest = checkpoints.create_manager(str(two), 2).latest_step()
    stopped_with_results = (two / "results.json").exists()
    resumed = _wait(_start(root / "synthetic", two, 2, 2))
    _assert_done(resumed)
    _assert_done(_wait(reference))
    return {
        "one": one,
        "two": two,
        "writes": [two.parent / "two_hosts_logs" / f"writes.{i}" for i in range(2)],
        "preempted": preempted,
        "latest_when_stopped": latest,
        "stopped_with_results": stopped_with_results,
        "resumed": resumed,
    }


def test_sigterm_to_one_host_stops_all_at_one_step_and_both_resume(runs):
    assert [status for status, _ in runs["preempted"]] == [75, 75], runs["preempted"]
    stopped = {_preempted_step(output) for _, output in runs["preempted"]}
    assert len(stopped) == 1, stopped  # the same step on both hosts
    step = stopped.pop()
    assert 0 < step < 4
    assert runs["latest_when_stopped"] == step and not runs["stopped_with_results"]
    for _, output in runs["resumed"]:
        assert f"Resuming from step {step}" in output


def test_two_hosts_train_as_one_host_with_as_many_devices(runs, data_dir):
    # The two hosts' run was stopped and resumed: it also ends where an uninterrupted one would.
    one, two = _state(runs["one"], data_dir), _state(runs["two"], data_dir)
    assert int(one.step) == int(two.step) == 4
    _assert_same_params(one, two)


def test_evaluation_counts_every_example_once_across_hosts(runs):
    one, two = (json.loads((runs[k] / "results.json").read_text()) for k in ("one", "two"))
    for split in ("validation", "test"):
        assert np.sum(two[split]["confusion_matrix"]) == 16  # padded to 24: 2 batches of 12
        assert two[split]["confusion_matrix"] == one[split]["confusion_matrix"]
        assert two[split]["ua"] == one[split]["ua"]
        assert two[split]["loss"] == pytest.approx(one[split]["loss"], rel=1e-5)
        assert two[split]["per_speaker_ua"] == one[split]["per_speaker_ua"]
        # The hosts' probabilities, gathered on process 0, in the split's stored order.
        rows = [
            [json.loads(line) for line in (runs[k] / f"predictions_{split}.jsonl").open()]
            for k in ("one", "two")
        ]
        assert [r["id"] for r in rows[1]] == [r["id"] for r in rows[0]] and len(rows[0]) == 16
        np.testing.assert_allclose(
            [r["probabilities"] for r in rows[1]], [r["probabilities"] for r in rows[0]], atol=1e-4
        )


def test_only_process_0_writes_the_run_files(runs):
    writes = [set(path.read_text().split()) for path in runs["writes"]]
    outside = [{w for w in written if not w.startswith("checkpoints")} for written in writes]
    assert {".lock", "config.json", "splits.json", "results.json"} <= outside[0]
    assert any(w.endswith(".png") for w in outside[0])
    assert outside[1] == set(), outside[1]


def test_the_rows_of_the_hosts_stack_to_the_one_host_batch(data_dir):
    from emohrnet_jax.data import pipeline

    fold = pipeline.create_fold_input(helpers.tiny_config(data_dir))
    one = list(fold.train_batches(BATCH_SIZE, seed=0, epoch=1))
    hosts = [list(fold.train_batches(BATCH_SIZE, 0, 1, p, 2)) for p in (0, 1)]
    assert len(one) == len(hosts[0]) == len(hosts[1]) == 2
    for step, batch in enumerate(one):
        assert not set(hosts[0][step]["id"]) & set(hosts[1][step]["id"])
        for key in ("id", "mel", "label"):
            stacked = np.concatenate([host[step][key] for host in hosts])
            np.testing.assert_array_equal(stacked, batch[key])


def test_cluster_flags_without_distributed_are_one_line_error(data_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "emohrnet_jax.main",
        *_flags(data_dir),
        f"--workdir={tmp_path}",
        "--num_processes=2",
        "--process_id=0",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --num_processes, --process_id only apply with --distributed"
    ]
