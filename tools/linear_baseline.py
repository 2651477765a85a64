"""A logistic-regression baseline on per-utterance log-Mel statistics, for the same fold.

  python tools/linear_baseline.py --config=configs/demo.py
  python tools/linear_baseline.py --config=configs/demo.py --features=stats --config.data.fold=1
  python tools/linear_baseline.py --config=configs/demo.py --output=runs/baseline
  python -m emohrnet_jax.compare runs/demo runs/baseline

What an HRNet result should be compared with: a linear classifier on the mean log-Mel spectrum
(`--features=mean`) or on mean, standard deviation and mean absolute frame-to-frame change per band
plus the duration (`--features=stats`), trained on the fold's train speakers and scored on its test
speakers (emohrnet_jax.linear_baseline). `--output` (a folder or gs:// URL) writes `results.json`
and `predictions_test.jsonl` as a trained run does, so `emohrnet_jax.compare` can test the
difference. `--verbosity=1` adds the libraries' log lines.
"""

from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import cli, paths, storage

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_FEATURES = flags.DEFINE_enum("features", "mean", ["mean", "stats"], "Per-utterance features.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Write results.json and predictions_test.jsonl to this folder (or gs:// URL)."
)
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.quiet_console()
    storage.configure()
    try:
        output = paths.location(_OUTPUT.value, "--output")
    except cli.USER_ERRORS as error:
        cli.exit_with(error)
    with cli.quiet_imports():
        from emohrnet_jax import linear_baseline

    config = _CONFIG.value
    try:
        if output:
            result = linear_baseline.write_run(config, _FEATURES.value, output)
        else:
            result = linear_baseline.run(config, _FEATURES.value)
    except cli.USER_ERRORS as error:
        cli.exit_with(error)
    print(
        f"linear baseline ({_FEATURES.value}), {config.data.dataset} fold "
        f"{config.data.fold}, test: UA {result['ua']:.4f}  WA {result['wa']:.4f}  "
        f"macro-F1 {result['macro_f1']:.4f}  N {result['num_examples']}"
    )
    if output:
        print(f"wrote {output}/results.json and predictions_test.jsonl")


if __name__ == "__main__":
    app.run(main)
