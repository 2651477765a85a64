"""EmoHRNet-JAX entry point.

  python -m emohrnet_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m emohrnet_jax.main --config=configs/iemocap.py --workdir=runs/iemocap_fold0 \\
      --config.data.fold=0 --config.batch_size=32
  python -m emohrnet_jax.main --config=configs/demo.py --workdir=runs/demo --mode=evaluate

Re-running a training command resumes from the workdir's latest checkpoint (one that restores),
if the workdir's config.json matches the config (see emohrnet_jax.run_config.SAFE_FIELDS).
Exit status: 0 done, 1 an error (one line), 75 preempted (SIGTERM) after saving: run it again.
"""

# The restart with glibc's malloc settings (emohrnet_jax/allocator.py) comes before TensorFlow and
# JAX are imported, which would otherwise take their ~12 s twice.
from emohrnet_jax import allocator

if __name__ == "__main__":
    allocator.restart_with_tunables()

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from emohrnet_jax import compilation_cache, config_check, locks, paths

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "evaluate"], "Train (and test the best state), or evaluate a run."
)
_SPLIT = flags.DEFINE_enum(
    "split",
    "test",
    ["train", "validation", "test", "all"],
    "--mode=evaluate: the split to score (all: every speaker of config.cross_corpus.dataset).",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (Cloud TPU pods, multi-node GPU)."
)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache",
    compilation_cache.DEFAULT_FOLDER,
    compilation_cache.FLAG_HELP,
)
flags.mark_flags_as_required(["config", "workdir"])
# A user's mistake (a bad path or config, missing or stale data, a run of another config, a
# locked workdir, a diverging loss) is one line and exit status 1, not a traceback.
USER_ERRORS = (ValueError, OSError, locks.LockedError, FloatingPointError)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    try:
        workdir = paths.local(_WORKDIR.value, "--workdir")
        config_check.check(config)
    except USER_ERRORS as error:
        _exit_with(error)
    # TensorFlow and the training code take ~7 s to import: only once the config is known good.
    import jax

    from emohrnet_jax import train

    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    compilation_cache.enable(_COMPILATION_CACHE.value)
    logging.info(
        "JAX %s: process %d of %d, %d devices %s; GLIBC_TUNABLES=%s",
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
        jax.devices()[0].platform,
        os.environ.get("GLIBC_TUNABLES"),
    )
    try:
        if _MODE.value == "evaluate":
            train.evaluate_run(config, workdir, _SPLIT.value)
        elif train.train_and_evaluate(config, workdir) is None:
            sys.exit(train.EXIT_PREEMPTED)
    except USER_ERRORS as error:
        _exit_with(error)


def _exit_with(error: BaseException) -> None:
    logging.debug("the traceback", exc_info=True)  # --verbosity=1 shows it.
    raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    app.run(main)
