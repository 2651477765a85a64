"""Builds a corpus's log-Mel TFRecords (tensorflow-datasets) from its raw files.

  python tools/prepare_data.py --dataset=ravdess --manual_dir=RAW --data_dir=OUT
  python tools/prepare_data.py --dataset=iemocap --manual_dir=IEMOCAP_full_release --data_dir=OUT
  python tools/prepare_data.py --dataset=emovo --manual_dir=RAW --data_dir=OUT
  python tools/prepare_data.py --dataset=labelled_folder --csv=clips.csv --data_dir=OUT
  python tools/prepare_data.py --dataset=synthetic --data_dir=OUT

Feature parameters come from `--config` (default: configs/default.py; pass the config you will
train with if it changes them). Extraction uses every core; tfds writes into a temporary folder and
renames it when done, so a killed build is simply re-run. Exits 0 when the dataset was built (files
skipped included, see the printed summary and `prepare_summary.json`), 1 with the reason otherwise.
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from emohrnet_jax.audio import features
from emohrnet_jax.data import builders, corpora, pipeline

_DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parent.parent / "configs" / "default.py")

_DATASET = flags.DEFINE_enum("dataset", None, sorted(builders.BUILDERS), "Corpus to build.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder holding the raw corpus.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir (default: config.data.data_dir).")
_CSV = flags.DEFINE_string("csv", None, "labelled_folder: CSV of path,label,speaker.")
_CLASS_NAMES = flags.DEFINE_list("class_names", None, "labelled_folder: classes in logit order.")
_SKIP_UNKNOWN = flags.DEFINE_bool(
    "skip_unknown_labels", False, "Skip (and count) clips with unknown labels instead of failing."
)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Extraction processes (default: cores).")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Config whose data fields set the features.", lock_config=True
)


def _options(dataset: str) -> dict:
    data_config = _CONFIG.value.data.copy_and_resolve_references()
    data_config.unlock()
    data_config.dataset = dataset
    options = {} if dataset == "labelled_folder" else pipeline.builder_options(data_config)
    if dataset == "labelled_folder":
        if not _CSV.value:
            raise ValueError("--dataset=labelled_folder needs --csv=PATH")
        options["csv_path"] = _CSV.value
        if _CLASS_NAMES.value:
            options["class_names"] = tuple(_CLASS_NAMES.value)
    if _SKIP_UNKNOWN.value:
        options["skip_unknown_labels"] = True
    return options


def _print_summary(summary: dict) -> None:
    print(f"\n{summary['dataset']} ({summary['config']}) in {summary['data_dir']}")
    print(f"  kept     {summary['kept']:>6}   speakers: {len(summary['speakers'])}")
    for title, key in (
        ("skipped", "skipped"),
        ("excluded", "excluded"),
        ("converted", "conversions"),
    ):
        for reason, count in summary[key].items():
            print(f"  {title:<8} {count:>6}   {reason}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    dataset = _DATASET.value
    needs_manual_dir = dataset not in ("synthetic", "labelled_folder")
    try:
        if needs_manual_dir and not _MANUAL_DIR.value:
            raise ValueError(f"--dataset={dataset} needs --manual_dir=RAW (the unpacked corpus)")
        summary = builders.prepare(
            dataset,
            data_dir=_DATA_DIR.value or _CONFIG.value.data.data_dir,
            manual_dir=_MANUAL_DIR.value,
            feature_params=features.FeatureParams.from_config(_CONFIG.value.data),
            num_workers=_NUM_WORKERS.value,
            **_options(dataset),
        )
    except (ValueError, OSError, corpora.UnknownLabelError) as error:
        logging.info("prepare_data failed", exc_info=True)
        print(f"prepare_data: {dataset}: {error}", file=sys.stderr)
        sys.exit(1)
    _print_summary(summary)


if __name__ == "__main__":
    flags.mark_flag_as_required("dataset")
    app.run(main)
