"""Exclusive locks on folders (a training run, a dataset build), released when the holder dies.

The lock is an `fcntl.flock` on a file inside the folder: the kernel drops it when the process
exits, however it exits (kill -9 included), so a lock left by a dead process is never in the way.
The file also records who holds it (pid, host, command), only to name the holder in the error.

A bucket has no flock: a gs:// folder's lock is a lease, an object that its holder renews every
RENEW_S seconds and deletes on exit. One not renewed for STALE_S seconds (its holder was killed
or lost its VM) is taken over, with a warning naming the old holder.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from absl import logging

from emohrnet_jax import storage

RENEW_S = 30.0
STALE_S = 120.0


class LockedError(RuntimeError):
    """The folder is in use by another process."""


def _describe(info: dict) -> str:
    return f"process {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"


def _holder(path: str) -> str:
    try:
        with open(path) as file:
            return _describe(json.load(file))
    except (OSError, ValueError, KeyError):
        return "another process"


def _about_me() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(os.path.basename(a) for a in sys.argv[:1]) or "python",
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


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
    if storage.is_url(folder):
        with _lease(folder, what, name):
            yield
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{what} {folder} is in use by {_holder(path)}") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_about_me()).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # Closing releases the flock.


def _holder_of(lease: str) -> str:
    try:
        return _describe(storage.read_json(lease))
    except (OSError, ValueError, KeyError):
        return "another process"


def _read_lease(path: str) -> dict | None:
    try:
        return storage.read_json(path)
    except FileNotFoundError:
        return None
    except ValueError:  # a lease cut short: nobody can renew it
        return {"renewed": 0.0}


@contextlib.contextmanager
def _lease(folder: str, what: str, name: str) -> Iterator[None]:
    """Holds the lease `folder/name` in a bucket, renewed by a thread until the block ends."""
    path = f"{folder.rstrip('/')}/{name}"
    held = _read_lease(path)
    if held is not None:
        age = time.time() - float(held.get("renewed", 0.0))
        if age < STALE_S:
            raise LockedError(
                f"{what} {folder} is in use by {_describe(held)}, renewed {age:.0f} s ago (a "
                f"lock not renewed for {STALE_S:.0f} s is taken over)"
            )
        if "pid" in held:
            logging.warning("Taking over %s: %s stopped renewing it", path, _describe(held))
        storage.path(path).unlink(missing_ok=True)
    mine = {**_about_me(), "token": uuid.uuid4().hex, "renewed": time.time()}
    try:
        storage.create_exclusively(path, json.dumps(mine).encode())
    except FileExistsError:  # another run took it between our read and our write
        raise LockedError(f"{what} {folder} is in use by {_holder_of(path)}") from None
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW_S):
            storage.write_json_atomically(path, {**mine, "renewed": time.time()})

    renewer = threading.Thread(target=renew, name=f"lease {path}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if (_read_lease(path) or {}).get("token") == mine["token"]:
            storage.path(path).unlink()
