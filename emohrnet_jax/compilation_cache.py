"""The persistent XLA compilation cache of training, evaluation and prediction (no TensorFlow)."""

import os

import jax

DEFAULT_FOLDER = os.environ.get("JAX_COMPILATION_CACHE_DIR", "~/.cache/emohrnet_jax/xla")
FLAG_HELP = "Persistent XLA compilation cache: a re-run starts without recompiling ('' = off)."


def enable(folder: str) -> None:
    """Keeps compiled XLA programs in `folder` ('' = off), so that a re-run starts fast.

    JAX keeps the programs that took at least `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` (1 s by
    default) to compile.
    """
    if folder:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(folder))
