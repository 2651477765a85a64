"""Folder locks and user paths: a live holder is named, a dead one never blocks, URLs refused."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from emohrnet_jax import locks, paths


def _hold_in_subprocess(folder: str) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import sys, time
        from emohrnet_jax import locks
        with locks.hold({folder!r}, "the workdir"):
            print("held", flush=True)
            time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_live_holder_is_named_and_a_killed_one_is_stale(tmp_path):
    folder = str(tmp_path / "run")
    process = _hold_in_subprocess(folder)
    try:
        expected = f"in use by process {process.pid} on "
        with pytest.raises(locks.LockedError, match=expected), locks.hold(folder, "the workdir"):
            pass
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    # The lock file is still there, but its holder is dead: the lock is free.
    assert os.path.exists(os.path.join(folder, ".lock"))
    with locks.hold(folder, "the workdir"):
        pass


def test_the_lock_is_released_on_exit_and_on_error(tmp_path):
    with pytest.raises(KeyError), locks.hold(str(tmp_path), "the workdir"):
        raise KeyError
    with locks.hold(str(tmp_path), "the workdir"):
        pass


@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://b/x", "https://host/x", "GS://b"])
def test_urls_are_refused(url):
    with pytest.raises(paths.PathError, match=r"--manual_dir=.*: give a local path here"):
        paths.local(url, "--manual_dir")


def test_home_is_expanded_and_local_paths_kept():
    assert paths.local("~/x", "--data_dir") == os.path.join(os.path.expanduser("~"), "x")
    assert paths.local("runs/a:b", "--workdir") == "runs/a:b"
    assert paths.local(None, "--data_dir") is None
