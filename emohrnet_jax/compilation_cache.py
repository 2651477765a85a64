"""The persistent XLA compilation cache of training, evaluation and prediction (no TensorFlow)."""

import os

import jax
from absl import logging

_MIN_COMPILE_TIME = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def enable(folder: str) -> None:
    """Keeps compiled XLA programs in `folder` ('' = off), so that a re-run starts fast.

    The folder comes from `--compilation_cache` (emohrnet_jax.cli). Every program is kept, not
    only those that took JAX's default 1 s to compile: predict's forward pass of a small model
    compiles in under a second, and a second run would compile it again (docs/performance.md);
    `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`, where set, is kept.
    """
    if folder:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(folder))
        if _MIN_COMPILE_TIME not in os.environ:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def seconds_since_process_start() -> float | None:
    """Wall-clock seconds since this process started (imports included); None off Linux."""
    try:
        with open("/proc/self/stat") as file:
            # Field 22, after the parenthesized command name (which may hold spaces).
            start_ticks = int(file.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as file:
            uptime = float(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def log_time_since_start(what: str, result) -> None:
    """Logs, once `result` is computed, that `what` is done N s after the process started."""
    jax.block_until_ready(result)
    since_start = seconds_since_process_start()
    if since_start is not None:  # Linux only.
        logging.info("%s done %.1f s after the process started", what, since_start)
