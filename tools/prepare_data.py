"""Builds a corpus's log-Mel TFRecords (tensorflow-datasets) from its raw files.

  python tools/prepare_data.py --dataset=ravdess --manual_dir=RAW --data_dir=OUT
  python tools/prepare_data.py --dataset=iemocap --manual_dir=IEMOCAP_full_release --data_dir=OUT
  python tools/prepare_data.py --dataset=emovo --manual_dir=RAW --data_dir=OUT
  python tools/prepare_data.py --dataset=crema_d --manual_dir=CREMA-D --data_dir=OUT
    (emodb, tess and savee alike: --manual_dir is the unpacked corpus)
  python tools/prepare_data.py --dataset=labelled_folder --csv=clips.csv --data_dir=OUT
  python tools/prepare_data.py --dataset=synthetic --data_dir=OUT

Feature parameters come from `--config` (default: configs/default.py; pass the config you will
train with if it changes them). Train on a labelled folder with `--config.data.csv=` the same CSV:
each CSV is its own build. Extraction uses every core. Running it again keeps a build whose files
and labels are unchanged and rebuilds one whose sources changed, saying what changed. A build is
made in a temporary folder under a lock (a second prepare of the same build is refused) and
replaces the old one only when complete, so a killed build is simply re-run. Exits 0 when the
dataset was built (files skipped included, see the printed summary and `prepare_summary.json`),
1 with the reason otherwise. `--verbosity=1` adds the libraries' log lines and the traceback.
`--beam_pipeline_options=runner=...,...` extracts the features on Apache Beam instead (the [beam]
extra; DirectRunner here, Dataflow, Spark or Flink for corpora that outgrow one machine): the same
examples and summary as the default build.
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import cli, locks, paths, storage
from emohrnet_jax.data import corpora

_DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parent.parent / "configs" / "default.py")
# The names of emohrnet_jax.data.builders.BUILDERS, whose import loads TensorFlow (~7 s).
DATASETS = (
    "crema_d",
    "emodb",
    "emovo",
    "esd",
    "iemocap",
    "labelled_folder",
    "msp_podcast",
    "ravdess",
    "savee",
    "synthetic",
    "tess",
)

_DATASET = flags.DEFINE_enum("dataset", None, DATASETS, "Corpus to build.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder holding the raw corpus.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir (default: config.data.data_dir).")
_CSV = flags.DEFINE_string("csv", None, "labelled_folder: CSV of path,label,speaker.")
_CLASS_NAMES = flags.DEFINE_list("class_names", None, "labelled_folder: classes in logit order.")
_SKIP_UNKNOWN = flags.DEFINE_bool(
    "skip_unknown_labels", False, "Skip (and count) clips with unknown labels instead of failing."
)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Extraction processes (default: cores).")
_BEAM_OPTIONS = flags.DEFINE_string(
    "beam_pipeline_options",
    None,
    "Extract on Apache Beam (the [beam] extra) with these pipeline options, in tfds build's "
    "format, e.g. runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing. "
    "The workers log at ERROR unless --verbosity=1 or default_sdk_harness_log_level= is given.",
)
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Config whose data fields set the features.", lock_config=True
)

_WITHOUT_MANUAL_DIR = ("labelled_folder", "synthetic")
# ImportError: --beam_pipeline_options without apache-beam installed.
_ERRORS = (ValueError, OSError, ImportError, corpora.UnknownLabelError, locks.LockedError)


def _check_flags(dataset: str) -> None:
    """Refuses a flag that this dataset would ignore, or a missing one it needs."""
    if _CSV.value and dataset != "labelled_folder":
        raise ValueError(f"--csv is for --dataset=labelled_folder, not {dataset}")
    if _MANUAL_DIR.value and dataset in _WITHOUT_MANUAL_DIR:
        source = "its --csv" if dataset == "labelled_folder" else "code"
        raise ValueError(f"--manual_dir is not used by --dataset={dataset} (built from {source})")
    if dataset not in _WITHOUT_MANUAL_DIR and not _MANUAL_DIR.value:
        raise ValueError(f"--dataset={dataset} needs --manual_dir=RAW (the unpacked corpus)")
    if dataset == "labelled_folder" and not _CSV.value:
        raise ValueError("--dataset=labelled_folder needs --csv=PATH")
    if _BEAM_OPTIONS.value and _NUM_WORKERS.value is not None:
        raise ValueError(
            "--num_workers is for the default build; on Beam the runner sets the workers "
            "(e.g. direct_num_workers=2 in --beam_pipeline_options)"
        )


def _beam_options():
    """The parsed `--beam_pipeline_options`; None for the default build."""
    if not _BEAM_OPTIONS.value:
        return None
    from emohrnet_jax.data import beam_build

    options = beam_build.pipeline_options(_BEAM_OPTIONS.value)
    if not cli.verbose():
        beam_build.quiet_workers(options)
    return options


def _options(dataset: str) -> dict:
    from emohrnet_jax.data import loading

    data_config = _CONFIG.value.data.copy_and_resolve_references()
    data_config.unlock()
    data_config.dataset = dataset
    options = {} if dataset == "labelled_folder" else loading.builder_options(data_config)
    if dataset == "labelled_folder":
        options["csv_path"] = paths.local(_CSV.value, "--csv")
        if _CLASS_NAMES.value:
            options["class_names"] = tuple(_CLASS_NAMES.value)
    if _SKIP_UNKNOWN.value or data_config.skip_unknown_labels:
        options["skip_unknown_labels"] = True
    return options


def _print_summary(summary: dict) -> None:
    print(f"\n{summary['dataset']} ({summary['config']}) in {summary['data_dir']}")
    if summary.get("rebuilt"):
        print(f"  rebuilt: {summary['rebuilt']}")
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
    cli.quiet_console()
    storage.configure()
    try:
        _check_flags(dataset)
        data_dir = paths.location(_DATA_DIR.value, "--data_dir") or paths.location(
            _CONFIG.value.data.data_dir, "config.data.data_dir"
        )
        if data_dir and storage.is_url(data_dir):  # before TensorFlow's import: fail at once
            storage.check_writable(data_dir, "--data_dir")
        with cli.quiet_imports():
            beam_options = _beam_options()  # Before TensorFlow's import: a typo fails at once.
            from emohrnet_jax.audio import features
            from emohrnet_jax.data import remote

            options = _options(dataset)  # The input pipeline's import loads TensorFlow.

        summary = remote.prepare(
            dataset,
            data_dir=data_dir,
            manual_dir=paths.local(_MANUAL_DIR.value, "--manual_dir"),
            feature_params=features.FeatureParams.from_config(_CONFIG.value.data),
            num_workers=_NUM_WORKERS.value,
            beam_options=beam_options,
            **options,
        )
    except _ERRORS as error:
        cli.exit_with(error, f"prepare_data: {dataset}")
    _print_summary(summary)


flags.mark_flag_as_required("dataset")

if __name__ == "__main__":
    app.run(main)
