"""Checks of a training config that need no JAX, Flax or TensorFlow: run before the slow imports.

Each mistake is reported as one line naming the field and what to do, within a second of the
command starting, instead of as a library's message after ~7 s of imports (or an epoch of work).
"""

import ml_collections

from emohrnet_jax import mixture_spec

LR_SCHEDULES = ("constant", "cosine")
# As emohrnet_jax.models and emohrnet_jax.augment accept them (they import JAX, so not from there).
DTYPES = ("float32", "bfloat16", "float16")
IM2COL = ("auto", "on", "off")
MASK_VALUES = ("mean", "zero")
CLASS_WEIGHTS = ("none", "balanced")
# As emohrnet_jax.data.pipeline accepts them (it imports TensorFlow, so not from there).
SAMPLING = ("shuffle", "balanced")
# As emohrnet_jax.windows names them (it imports librosa, so not from there).
EVALUATIONS = ("utterance", "centre_crop")
# As emohrnet_jax.audio.features names them (librosa again).
NORMALIZATIONS = ("utterance", "utterance_band", "training_band")
# As emohrnet_jax.data.protocols reads them.
PROTOCOLS = ("speaker", "random", "emobox", "official", "leave_one_corpus_out")
# The corpora released with partitions (`official`), and those whose folds must be them.
OFFICIAL_DATASETS = ("esd", "msp_podcast")
ONLY_OFFICIAL = ("msp_podcast",)
IEMOCAP_DIALOGS = ("all", "improvised")


class ConfigError(ValueError):
    """A config field with a value that training cannot use."""


def _one_of(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{name}={value!r} is not one of {allowed}")


def _positive(name: str, value) -> None:
    if not value >= 1:
        raise ConfigError(f"config.{name}={value} must be >= 1")


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (one line, naming the field) for a config that training cannot use."""
    _positive("batch_size", config.batch_size)
    _positive("num_epochs", config.num_epochs)
    _positive("keep_checkpoints", config.keep_checkpoints)
    _positive("bootstrap_resamples", config.bootstrap_resamples)
    _one_of("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    _one_of("evaluation", config.evaluation, EVALUATIONS)
    if config.evaluation_hop_frames < 0:
        raise ConfigError(
            f"config.evaluation_hop_frames={config.evaluation_hop_frames} must be >= 0 "
            "(0: half a window)"
        )
    if config.warmup_epochs < 0:
        raise ConfigError(f"config.warmup_epochs={config.warmup_epochs} must be >= 0")
    # The cosine decay lasts num_epochs - warmup_epochs: optax refuses a decay of 0 steps.
    if config.lr_schedule == "cosine" and config.warmup_epochs >= config.num_epochs:
        raise ConfigError(
            f"config.warmup_epochs={config.warmup_epochs} must be shorter than "
            f"config.num_epochs={config.num_epochs} with the cosine schedule: lower the warm-up "
            "or raise num_epochs"
        )
    for field in ("dtype", "param_dtype"):
        _one_of(f"model.{field}", config.model[field], DTYPES)
    _one_of("model.im2col", config.model.im2col, IM2COL)
    _one_of("augment.mask_value", config.augment.mask_value, MASK_VALUES)
    _one_of("class_weights", config.class_weights, CLASS_WEIGHTS)
    _one_of("data.sampling", config.data.sampling, SAMPLING)
    _one_of("data.normalization", config.data.get("normalization", "utterance"), NORMALIZATIONS)
    check_protocol(config.data)
    try:
        mixture_spec.check(config.data)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    classes = tuple(config.data.class_names)
    if config.model.num_classes != len(classes):
        raise ConfigError(
            f"config.model.num_classes={config.model.num_classes} but config.data.class_names "
            f"lists {len(classes)} classes {list(classes)}: make them agree"
        )


def check_protocol(data_config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a fold protocol, fold file or dialog filter that cannot apply.

    Fields missing from `data_config` (a config of before they existed) mean today's defaults.
    """
    protocol = data_config.get("protocol", "speaker")
    _one_of("data.protocol", protocol, PROTOCOLS)
    _check_official(data_config, protocol)
    dialogs = data_config.get("iemocap_dialogs", "all")
    _one_of("data.iemocap_dialogs", dialogs, IEMOCAP_DIALOGS)
    if dialogs != "all" and data_config.dataset != "iemocap":
        raise ConfigError(
            f"config.data.iemocap_dialogs={dialogs!r} applies to IEMOCAP only, not "
            f"{data_config.dataset}: leave it 'all'"
        )
    fold_file = data_config.get("fold_file")
    if protocol == "emobox" and not fold_file:
        raise ConfigError(
            "config.data.protocol='emobox' needs config.data.fold_file: the fold's EmoBox "
            "<corpus>_train_fold_<k>.jsonl (its test file beside it), or 'TRAIN.jsonl,TEST.jsonl'"
        )
    if fold_file and protocol != "emobox":
        raise ConfigError(
            f"config.data.fold_file is set but config.data.protocol={protocol!r}: set "
            "--config.data.protocol=emobox to use the fold file"
        )


def _check_official(data_config: ml_collections.ConfigDict, protocol: str) -> None:
    """Refuses `official` on a corpus without partitions, and any other on MSP-Podcast."""
    dataset = data_config.dataset
    if protocol == "official" and dataset not in OFFICIAL_DATASETS:
        raise ConfigError(
            f"config.data.protocol='official' needs a corpus released with partitions "
            f"{OFFICIAL_DATASETS}, not {dataset}"
        )
    if dataset in ONLY_OFFICIAL and protocol != "official":
        raise ConfigError(
            f"config.data.protocol={protocol!r}: {dataset}'s folds are its official partitions "
            "(no re-splitting); set --config.data.protocol=official"
        )
    if data_config.get("test_partition") and protocol != "official":
        raise ConfigError(
            f"config.data.test_partition is set but config.data.protocol={protocol!r}: it "
            "chooses the test partition of protocol 'official'"
        )
