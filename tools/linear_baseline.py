"""A logistic-regression baseline on per-utterance log-Mel statistics, for the same fold.

  python tools/linear_baseline.py --config=configs/demo.py
  python tools/linear_baseline.py --config=configs/demo.py --features=stats --config.data.fold=1

What an HRNet result should be compared with: a linear classifier on the mean log-Mel spectrum
(`--features=mean`) or on mean, standard deviation and mean absolute frame-to-frame change per band
plus the duration (`--features=stats`), trained on the fold's train speakers and scored on its test
speakers (emohrnet_jax.linear_baseline). `--verbosity=1` adds the libraries' log lines.
"""

from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_FEATURES = flags.DEFINE_enum("features", "mean", ["mean", "stats"], "Per-utterance features.")
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.quiet_console()
    with cli.quiet_imports():
        from emohrnet_jax import linear_baseline

    result = linear_baseline.run(_CONFIG.value, _FEATURES.value)
    print(
        f"linear baseline ({_FEATURES.value}), {_CONFIG.value.data.dataset} fold "
        f"{_CONFIG.value.data.fold}, test: UA {result['ua']:.4f}  WA {result['wa']:.4f}  "
        f"macro-F1 {result['macro_f1']:.4f}  N {result['num_examples']}"
    )


if __name__ == "__main__":
    app.run(main)
