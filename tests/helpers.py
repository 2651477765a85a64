"""Shared test helpers."""

import pathlib
import runpy

import ml_collections

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load_config(name: str) -> ml_collections.ConfigDict:
    """Loads `configs/<name>.py` the way the command-line flags do, from any working directory."""
    return runpy.run_path(str(CONFIGS / f"{name}.py"))["get_config"]()


def tiny_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    """The demo config shrunk to seconds: tiny HRNet, 32 bands x 32 frames, 8 speakers."""
    config = load_config("demo")
    config.data.data_dir = str(data_dir)
    config.data.n_mels, config.data.n_fft, config.data.num_frames = 32, 512, 32
    config.data.synthetic_speakers, config.data.synthetic_utterances_per_speaker = 8, 8
    config.data.num_folds = 4
    config.model.variant = "tiny"
    # Whole utterances in windows that do not overlap: half the windows of the default hop.
    config.evaluation_hop_frames = 32
    # Augmented, unlike the demo: the tests train through every part of the step.
    config.augment.spec_augment = config.augment.time_shift = True
    config.augment.freq_mask_width, config.augment.time_mask_width = 4, 4
    config.batch_size, config.num_epochs = 8, 2
    # The paper's constant rate: one compiled train step whatever the number of epochs.
    config.lr_schedule, config.warmup_epochs = "constant", 0.0
    for field, value in overrides.items():
        section, _, key = field.rpartition(".")
        (config[section] if section else config)[key] = value
    return config


def tiny_flags(data_dir) -> list[str]:
    """`tiny_config` as command-line overrides of configs/demo.py."""
    return [
        f"--config={CONFIGS / 'demo.py'}",
        f"--config.data.data_dir={data_dir}",
        "--config.data.n_mels=32",
        "--config.data.n_fft=512",
        "--config.data.num_frames=32",
        "--config.data.synthetic_speakers=8",
        "--config.data.synthetic_utterances_per_speaker=8",
        "--config.data.num_folds=4",
        "--config.model.variant=tiny",
        "--config.evaluation_hop_frames=32",
        "--config.augment.spec_augment=True",
        "--config.augment.time_shift=True",
        "--config.augment.freq_mask_width=4",
        "--config.augment.time_mask_width=4",
        "--config.batch_size=8",
        "--config.num_epochs=2",
        "--config.lr_schedule=constant",
        "--config.warmup_epochs=0",
    ]


def speech(seconds: float, sample_rate: int = 16000, index: int = 0):
    """A synthetic utterance of `seconds` (one of 4 of a speaker) as a float waveform."""
    from emohrnet_jax.audio import synthetic

    spec = synthetic.CorpusSpec(
        num_speakers=1, utterances_per_speaker=4, min_seconds=seconds, max_seconds=seconds
    )
    return synthetic.synthesize(synthetic.plan(spec)[index], spec, sample_rate)


def prepared_tiny_corpus(tmp_path_factory) -> pathlib.Path:
    """A data_dir holding the synthetic corpus of `tiny_config`, prepared once per caller."""
    from emohrnet_jax.data import loading  # TensorFlow: only for the tests that need it.

    path = tmp_path_factory.mktemp("synthetic")
    loading.load_builder(tiny_config(path).data)
    return path
