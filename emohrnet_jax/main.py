"""EmoHRNet-JAX entry point.

  python -m emohrnet_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m emohrnet_jax.main --config=configs/iemocap.py --workdir=runs/iemocap_fold0 \\
      --config.data.fold=0 --config.batch_size=32
  python -m emohrnet_jax.main --config=configs/demo.py --workdir=runs/demo --mode=evaluate

Re-running a training command resumes from the workdir's latest checkpoint (one that restores),
if the workdir's config.json matches the config (see emohrnet_jax.run_config.SAFE_FIELDS).
The console shows the run's progress and results; `--verbosity=1` adds the libraries' log lines
and the traceback of an error. On a Linux CPU the command restarts once with glibc malloc settings
that make train steps faster (emohrnet_jax/allocator.py); `--nomalloc_tunables` keeps glibc's.
Several processes (hosts), JAX finding the cluster where it can (a TPU VM):
  python -m emohrnet_jax.main --config=... --workdir=... --distributed \\
      [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]
Exit status: 0 done, 1 an error (one line), 75 preempted (SIGTERM) after saving: run it again.
"""

import os
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from emohrnet_jax import allocator, cli, config_check, paths, storage

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
# Where JAX cannot detect the cluster (a TPU VM it can): several processes on one machine, say.
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "--distributed: process 0's HOST:PORT (default: detected)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "--distributed: the number of processes (default: detected)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "--distributed: this process's index, 0 to N-1 (default: detected)."
)
_COMPILATION_CACHE = cli.define_compilation_cache_flag()
_MALLOC_TUNABLES = cli.define_malloc_tunables_flag()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    storage.configure()
    try:
        workdir = paths.location(_WORKDIR.value, "--workdir")
        config_check.check(config)
        cluster = _cluster()
        paths.location(config.data.data_dir, "config.data.data_dir")
        if _MODE.value == "train":  # before the imports and the data: a bad bucket fails at once
            storage.check_writable(workdir, "--workdir")
    except cli.USER_ERRORS as error:
        cli.exit_with(error)
    if _MALLOC_TUNABLES.value:
        allocator.restart_with_tunables()
    cli.quiet_console()
    # TensorFlow and the training code take ~7 s to import: only once the config is known good.
    with cli.quiet_imports():
        import jax

        from emohrnet_jax import compilation_cache, rescoring, train

    if _DISTRIBUTED.value:
        jax.distributed.initialize(**cluster)
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
            rescoring.evaluate_run(config, workdir, _SPLIT.value)
        elif train.train_and_evaluate(config, workdir) is None:
            sys.exit(train.EXIT_PREEMPTED)
    except cli.USER_ERRORS as error:
        cli.exit_with(error)


def _cluster() -> dict[str, Any]:
    """`jax.distributed.initialize`'s arguments from the flags (None: JAX detects it).

    Raises:
      ValueError: one of them is given without --distributed.
    """
    cluster = {
        "coordinator_address": _COORDINATOR_ADDRESS.value,
        "num_processes": _NUM_PROCESSES.value,
        "process_id": _PROCESS_ID.value,
    }
    given = [f"--{name}" for name, value in cluster.items() if value is not None]
    if given and not _DISTRIBUTED.value:
        raise ValueError(f"{', '.join(given)} only apply with --distributed")
    return cluster


def run() -> None:
    """The command line (also installed as `emohrnet-train`)."""
    app.run(main)


if __name__ == "__main__":
    run()
