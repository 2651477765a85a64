"""Runs every speaker-independent fold of a corpus's protocol and summarizes them.

  python tools/cross_validate.py --config=configs/iemocap.py --workdir=runs/iemocap_cv
  python tools/cross_validate.py --config=configs/demo.py --workdir=runs/demo_cv --folds=0,1
  python tools/cross_validate.py --config=configs/demo.py --workdir=runs/demo_seeds --seeds=0,1,2

Fold k trains in `WORKDIR/fold_k` exactly as `python -m emohrnet_jax.main --config.data.fold=k`
would; a fold already done is read back, an interrupted one resumes, a fold folder of another
config is refused (emohrnet_jax.cross_validation). Writes `WORKDIR/summary.json` (per-fold and
mean +- std UA, WA and macro-F1, the pooled speaker-bootstrap `ci95` and the summed test
confusion matrix), `WORKDIR/confusion_matrix.png`, `WORKDIR/ua_by_fold.png` (each fold's test UA
with its 95% interval) and prints a table. `--seeds=0,1,2` trains every fold once per seed
(`config.seed`) in `WORKDIR/seed_S/fold_k` (each `seed_S` an ordinary cross-validation folder)
and summarizes all fold x seed runs: mean +- std over them, each seed's mean, and the pooled
interval of the UA averaged over seeds. `--members_per_program=K` trains K of those runs at once in
one program (each still in its own folder, as alone; memory in `WORKDIR/members.json`),
`--steps_per_dispatch=B` B steps per dispatch of it. `--verbosity=1` adds the libraries' log lines;
`--nomalloc_tunables` skips the restart with glibc malloc settings (as emohrnet_jax.main's).
Exit status: 0 done, 1 an error (one line), 75 preempted (SIGTERM) after saving: run it again.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import allocator, cli, config_check, paths, storage

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder of the folds (fold_K, or seed_S/fold_K) and the summary."
)
_FOLDS = flags.DEFINE_list("folds", None, "Folds to run (default: every fold of the protocol).")
_SEEDS = flags.DEFINE_list(
    "seeds", None, "Train each fold once per seed, in seed_S/fold_K (default: config.seed, fold_K)."
)
_MEMBERS = flags.DEFINE_integer(
    "members_per_program",
    1,
    "Train this many fold x seed runs at once in one program (emohrnet_jax.members).",
    lower_bound=1,
)
_STEPS_PER_DISPATCH = flags.DEFINE_integer(
    "steps_per_dispatch", 1, "Train steps per dispatch of that program (a scan).", lower_bound=1
)
_COMPILATION_CACHE = cli.define_compilation_cache_flag()
_MALLOC_TUNABLES = cli.define_malloc_tunables_flag()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    folds = [int(f) for f in _FOLDS.value] if _FOLDS.value else None
    try:
        seeds = [int(s) for s in _SEEDS.value] if _SEEDS.value else None
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {','.join(_SEEDS.value)}") from None
    storage.configure()
    try:
        workdir = paths.location(_WORKDIR.value, "--workdir")
        config_check.check(_CONFIG.value)
        storage.check_writable(workdir, "--workdir")
        if _MALLOC_TUNABLES.value:
            allocator.restart_with_tunables()
        cli.quiet_console()
        # TensorFlow and the training code take ~7 s to import: only once the config is known good.
        with cli.quiet_imports():
            from emohrnet_jax import compilation_cache, cross_validation, train

        compilation_cache.enable(_COMPILATION_CACHE.value)
        summary = cross_validation.run_folds(
            _CONFIG.value, workdir, folds, seeds, _MEMBERS.value, _STEPS_PER_DISPATCH.value
        )
    except cli.USER_ERRORS as error:
        cli.exit_with(error)
    if summary is None:
        print("preempted: re-run the same command to resume", file=sys.stderr)
        sys.exit(train.EXIT_PREEMPTED)
    print(cross_validation.format_summary(summary))


if __name__ == "__main__":
    app.run(main)
