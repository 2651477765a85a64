"""Shared test helpers."""

import functools
import io
import pathlib
import runpy
import wave

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


def prepared_labelled_folder(folder: pathlib.Path, data_config, speakers: int) -> str:
    """Prepares `labelled_folder` clips of `speakers` synthetic speakers (8 each) in `folder`,
    labelled anger, calm, joy, neutral in turn ("calm" is none of the tiny run's classes);
    returns the CSV's path."""
    import soundfile

    from emohrnet_jax.audio import features, synthetic
    from emohrnet_jax.data import builders  # TensorFlow: only for the tests that need it.

    spec = synthetic.CorpusSpec(speakers, 8, min_seconds=0.6, max_seconds=0.9, seed=5)
    labels = ("anger", "calm", "joy", "neutral")
    rows = ["path,label,speaker"]
    for i, utterance in enumerate(synthetic.plan(spec)):
        soundfile.write(
            folder / f"{utterance.id}.wav", synthetic.synthesize(utterance, spec), 16000
        )
        rows.append(f"{utterance.id}.wav,{labels[i % 4]},{utterance.speaker}")
    csv = folder / "clips.csv"
    csv.write_text("\n".join(rows) + "\n")
    builders.prepare(
        "labelled_folder",
        data_config.data_dir,
        feature_params=features.FeatureParams.from_config(data_config),
        num_workers=0,
        csv_path=str(csv),
    )
    return str(csv)


@functools.cache
def wav_bytes(frames: int = 1600, rate: int = 16000) -> bytes:
    """A mono 16-bit PCM WAV of silence (0.1 s by default): the corpus listings read names."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * frames))
    return buffer.getvalue()


def write_wav(path: pathlib.Path, data: bytes | None = None) -> str:
    """Writes `data` (None: `wav_bytes()`) at `path`, making its folders; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes() if data is None else data)
    return str(path)
