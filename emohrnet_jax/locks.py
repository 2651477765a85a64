"""Exclusive locks on folders (a training run, a dataset build), released when the holder dies.

The lock is an `fcntl.flock` on a file inside the folder: the kernel drops it when the process
exits, however it exits (kill -9 included), so a lock left by a dead process is never in the way.
The file also records who holds it (pid, host, command), only to name the holder in the error.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator


class LockedError(RuntimeError):
    """The folder is in use by another process."""


def _holder(path: str) -> str:
    try:
        with open(path) as file:
            info = json.load(file)
        return f"process {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextlib.contextmanager
def hold(folder: str, what: str, name: str = ".lock") -> Iterator[None]:
    """Holds the lock of `folder` (created if needed) for the `with` block.

    Args:
      folder: the folder to lock; the lock file `folder/name` is left in place on exit.
      what: what the folder is, for the error ("the workdir", "the build of ravdess").
      name: the lock file's name.

    Raises:
      LockedError: another live process holds the lock (its pid, host and command are named).
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{what} {folder} is in use by {_holder(path)}") from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(os.path.basename(a) for a in sys.argv[:1]) or "python",
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # Closing releases the flock.
