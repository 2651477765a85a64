"""What the commands share: their common flags, a console a person reads, one-line errors.

No JAX or TensorFlow here: the commands call `quiet_console` before importing them (the native
libraries read their log settings when they load), then import them inside `quiet_imports`.
"""

import contextlib
import logging as std_logging
import os
import pathlib
import re
import sys
import tempfile
from collections.abc import Iterator

from absl import flags, logging

from emohrnet_jax import locks

# The flags defined here belong to the command that calls the definition (its --helpshort).
flags.disclaim_key_flags()

# A user's mistake (a bad path or config, missing or stale data, a run of another config, a
# locked workdir, a diverging loss) is one line and exit status 1, not a traceback.
USER_ERRORS = (ValueError, OSError, locks.LockedError, FloatingPointError)

# Log records from these folders are the project's own (progress, warnings).
_PROJECT = tuple(
    str(pathlib.Path(__file__).resolve().parent.parent / name) + os.sep
    for name in ("emohrnet_jax", "tools")
)
# Native libraries' start-up lines that ignore TF_CPP_MIN_LOG_LEVEL (absl's C++ log, oneDNN).
_NATIVE_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} .*\] )"
)


def define_compilation_cache_flag() -> flags.FlagHolder:
    """Defines `--compilation_cache`, the persistent XLA compilation cache folder ('' = off)."""
    return flags.DEFINE_string(
        "compilation_cache",
        os.environ.get("JAX_COMPILATION_CACHE_DIR", "~/.cache/emohrnet_jax/xla"),
        "Persistent XLA compilation cache: a re-run starts without recompiling ('' = off).",
    )


def define_malloc_tunables_flag() -> flags.FlagHolder:
    """Defines `--malloc_tunables`: restart once with emohrnet_jax.allocator's glibc settings."""
    return flags.DEFINE_bool(
        "malloc_tunables",
        True,
        "On a Linux CPU, restart once with GLIBC_TUNABLES set (emohrnet_jax/allocator.py): XLA "
        "then reuses freed memory between train steps. A GLIBC_TUNABLES of your own is kept.",
    )


def verbose() -> bool:
    """Whether `--verbosity=1` (or more) asked for every library's log lines and tracebacks."""
    return flags.FLAGS["verbosity"].value >= 1


def quiet_console() -> None:
    """Keeps the console to the project's progress and warnings and every error, unless `verbose()`.

    Hides TensorFlow's and XLA's C++ log and the libraries' (jax, tfds, orbax) log lines below
    ERROR; the project's own lines stay. A TF_CPP_MIN_LOG_LEVEL of the environment is kept.
    """
    if verbose():
        return
    # 3: TensorFlow's and XLA's C++ errors too (oneDNN's DT_HALF fallback is logged as one).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.get_absl_handler().addFilter(_project_info)
    std_logging.getLogger("jax").setLevel(std_logging.WARNING)


def _project_info(record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR or record.pathname.startswith(_PROJECT)


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Runs the block's imports of TensorFlow and JAX without their start-up lines (unless verbose).

    What else the block writes to stderr is written once it ends. tfds's progress bars stay on a
    terminal only (as predict's), where they take one line.
    """
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured if not _NATIVE_NOISE.match(line)]
            sys.stderr.buffer.write(b"".join(kept))
            sys.stderr.flush()
    # Imported by the block, or not needed (export).
    if "tensorflow_datasets" in sys.modules and not sys.stderr.isatty():
        sys.modules["tensorflow_datasets"].disable_progress_bar()


def exit_with(error: BaseException, prefix: str = "error") -> None:
    """Ends the command with `prefix: error` on one line (exit status 1)."""
    logging.debug("the traceback", exc_info=True)  # --verbosity=1 shows it.
    raise SystemExit(f"{prefix}: {error}") from None
