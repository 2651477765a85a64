"""The persistent XLA compilation cache of training, evaluation and prediction (no TensorFlow)."""

import os

import jax


def enable(folder: str) -> None:
    """Keeps compiled XLA programs in `folder` ('' = off), so that a re-run starts fast.

    The folder comes from `--compilation_cache` (emohrnet_jax.cli). JAX keeps the programs that
    took at least `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` (1 s by default) to compile.
    """
    if folder:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(folder))


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
