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
