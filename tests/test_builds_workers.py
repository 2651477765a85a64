"""kill -9 of a build: its extraction workers exit, and the re-run leaves no temporary folder."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests import helpers


def _children(pid: int) -> set[int]:
    children = set()
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(task) as file:
            children.update(int(child) for child in file.read().split())
    return children


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return b"spawn_main" in file.read()
    except FileNotFoundError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _wait_until(condition, timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc (Linux)")
def test_killed_prepare_leaves_no_workers_and_the_rerun_no_temporary_folder(tmp_path):
    tool = str(helpers.CONFIGS.parent / "tools" / "prepare_data.py")
    args = [
        sys.executable,
        tool,
        "--dataset=synthetic",
        f"--data_dir={tmp_path}",
        "--config.data.synthetic_speakers=4",
        "--config.data.synthetic_utterances_per_speaker=40",
        "--config.data.n_mels=32",
        "--config.data.n_fft=512",
        "--verbosity=1",  # tfds's progress bar (off a terminal only when verbose) shows the work
    ]
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        build = subprocess.Popen([*args, "--num_workers=2"], stderr=stderr)
    try:
        workers: set[int] = set()

        def working() -> bool:
            workers.update(c for c in _children(build.pid) if _is_worker(c))
            # tfds's progress bar counts the examples back from the workers: they are running.
            return len(workers) >= 2 and re.search(rb"[1-9]\d* examples", log.read_bytes())

        _wait_until(working, timeout=120)
        build.send_signal(signal.SIGKILL)
        assert build.wait() == -signal.SIGKILL  # killed mid-build, not finished
        waited = _wait_until(lambda: not any(_alive(w) for w in workers), timeout=10)
        print(f"workers gone {waited:.1f} s after the kill")
    finally:
        build.kill()
        for worker in workers:
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)
    assert glob.glob(str(tmp_path / "synthetic" / "*" / "incomplete.*"))  # what the kill left

    rerun = subprocess.run([*args, "--num_workers=0"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "kept        160" in rerun.stdout
    assert not glob.glob(str(tmp_path / "**" / "incomplete.*"), recursive=True)
