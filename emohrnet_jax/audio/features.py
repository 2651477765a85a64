"""Audio decoding and log-Mel feature extraction (librosa), with a reason for every rejected clip.

No TensorFlow here: worker processes of the builders import this module alone.
"""

import dataclasses
import os
from typing import Any

import librosa
import numpy as np
import soundfile

from emohrnet_jax import storage

# A clip whose peak absolute amplitude is below this is digital silence (or a mute channel).
SILENCE_PEAK = 1e-4
# Added to a variance before normalizing; training (TensorFlow) and prediction (numpy) share it.
NORMALIZATION_EPSILON = 1e-5
# config.data.normalization: one mean and variance per utterance (keeps the spectral tilt), per
# Mel band over the utterance's frames, or per Mel band over the training split's frames.
UTTERANCE, UTTERANCE_BAND, TRAINING_BAND = "utterance", "utterance_band", "training_band"
NORMALIZATIONS = (UTTERANCE, UTTERANCE_BAND, TRAINING_BAND)
# The prepared datasets store log-Mels in this dtype; prediction rounds its features the same way.
STORED_DTYPE = np.float16
# Frames per slice when normalizing: float64 copies of a whole hour-long log-Mel would take GBs.
_STATISTICS_FRAMES = 4096
# What soundfile raises for a file it cannot open or decode.
DECODE_ERRORS = (RuntimeError, soundfile.LibsndfileError, OSError)


@dataclasses.dataclass(frozen=True)
class FeatureParams:
    """Log-Mel parameters; part of every prepared dataset's metadata."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-10
    min_seconds: float = 0.25

    def __post_init__(self):
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"feature sizes must be positive: {self}")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, "
                f"fmax={self.fmax}, sample_rate={self.sample_rate}"
            )
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be > 0, got {self.log_floor}")

    @classmethod
    def from_config(cls, data_config: Any) -> "FeatureParams":
        """The feature parameters named in a `config.data` section (missing fields: defaults)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: data_config[name] for name in fields if name in data_config})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class AudioError(Exception):
    """A clip that cannot be used; `reason` is the short text counted in the build summary."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Clip:
    """A decoded mono clip at the target rate, with what was converted on the way."""

    waveform: np.ndarray
    conversions: tuple[str, ...]


class _ObjectSoundFile(soundfile.SoundFile):
    """A SoundFile decoding an open file object (a gs:// object's), which it closes with itself."""

    def __init__(self, file: Any):
        self._object = file
        super().__init__(file, mode="r")

    def close(self) -> None:
        super().close()
        self._object.close()


def _open_object(url: str) -> soundfile.SoundFile:
    """Opens the gs:// object `url` for decoding; gcsfs reads it in ranges (5 MiB blocks)."""
    try:
        file = storage.path(url).open("rb")
    except FileNotFoundError:
        raise AudioError("file not found", url) from None
    except OSError as error:
        raise AudioError("cannot read file", f"{url}: {error}") from error
    try:
        return _ObjectSoundFile(file)
    except DECODE_ERRORS as error:
        file.close()
        raise AudioError("cannot decode audio", str(error)) from error


def open_audio(path: str) -> soundfile.SoundFile:
    """Opens `path` (a file, or a gs:// object) for decoding, whatever bytes its name holds.

    Raises:
      AudioError: "file not found", "cannot read file" (gs://), or "cannot decode audio".
    """
    if storage.is_url(path):
        return _open_object(path)
    if not os.path.exists(path):
        raise AudioError("file not found", path)
    try:
        # A bytes name: soundfile encodes a str strictly, so a name that is not valid UTF-8
        # (held by Python as surrogate escapes) would raise UnicodeEncodeError.
        return soundfile.SoundFile(os.fsencode(path))
    except DECODE_ERRORS as error:
        raise AudioError("cannot decode audio", str(error)) from error


def load_audio(path: str, params: FeatureParams) -> Clip:
    """Decodes `path` (WAV int16/int24/float, FLAC, OGG) to float32 mono at `params.sample_rate`.

    Raises:
      AudioError: missing, undecodable, empty, silent or shorter than `params.min_seconds`.
    """
    with open_audio(path) as sound:
        try:
            audio = sound.read(dtype="float32", always_2d=True)
        except DECODE_ERRORS as error:
            raise AudioError("cannot decode audio", str(error)) from error
    return conform(audio, sound.samplerate, params)


def conform(audio: np.ndarray, rate: int, params: FeatureParams) -> Clip:
    """Decoded samples to float32 mono at `params.sample_rate`, checked as `load_audio` does.

    Args:
      audio: `(samples,)` or `(samples, channels)` (soundfile's layout), any float or int dtype
        already scaled to [-1, 1].
      rate: the samples' rate in Hz.
      params: the target rate and the shortest clip kept.

    Raises:
      AudioError: empty, non-finite, silent or shorter than `params.min_seconds`.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise AudioError("not a waveform", f"shape {audio.shape}, expected (samples, channels)")
    if audio.shape[0] == 0:
        raise AudioError("empty audio")
    conversions = []
    if audio.shape[1] > 1:
        conversions.append(f"downmixed {audio.shape[1]} channels to mono")
    waveform = audio.mean(axis=1)
    if rate != params.sample_rate:
        conversions.append(f"resampled from {rate} Hz")
        waveform = librosa.resample(
            waveform, orig_sr=rate, target_sr=params.sample_rate, res_type="soxr_hq"
        )
    if not np.all(np.isfinite(waveform)):
        raise AudioError("non-finite samples")
    seconds = waveform.shape[0] / params.sample_rate
    if seconds < params.min_seconds:
        raise AudioError(f"shorter than {params.min_seconds:g} s", f"{seconds:.3f} s")
    if np.max(np.abs(waveform)) < SILENCE_PEAK:
        raise AudioError("silent")
    return Clip(waveform.astype(np.float32), tuple(conversions))


def log_mel(waveform: np.ndarray, params: FeatureParams, center: bool = True) -> np.ndarray:
    """Natural-log Mel power spectrogram, float32 `(n_mels, 1 + len // hop)` (centred frames).

    `center=False`: frames start at sample 0 without padding, `1 + (len - n_fft) // hop` of them
    (for block-wise features that pad the clip's ends themselves).
    """
    mel = librosa.feature.melspectrogram(
        y=waveform,
        sr=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
        power=2.0,
        center=center,
    )
    return np.log(np.maximum(mel, params.log_floor)).astype(np.float32)


def normalization_statistics(mel: np.ndarray, mode: str = UTTERANCE) -> tuple[Any, Any]:
    """The mean and `sqrt(variance + NORMALIZATION_EPSILON)` of a log-Mel `(n_mels, frames)`.

    `UTTERANCE`: floats, over all of its cells; `UTTERANCE_BAND`: `(n_mels, 1)` float64 arrays,
    each band over its frames. float64 sums over slices of frames: closer to exact than either
    float32 reduction (so numpy and TensorFlow both agree with it), without a float64 copy of the
    whole clip.
    """
    if mode not in (UTTERANCE, UTTERANCE_BAND):
        raise ValueError(f"no per-clip statistics for normalization {mode!r}")
    axis, keep = (None, False) if mode == UTTERANCE else (-1, True)
    count = mel.size if mode == UTTERANCE else mel.shape[-1]
    slices = range(0, mel.shape[-1], _STATISTICS_FRAMES)
    mean = sum(
        np.sum(mel[..., i : i + _STATISTICS_FRAMES], axis=axis, dtype=np.float64, keepdims=keep)
        for i in slices
    )
    mean /= count
    squares = sum(
        np.square(mel[..., i : i + _STATISTICS_FRAMES].astype(np.float64) - mean).sum(
            axis=axis, keepdims=keep
        )
        for i in slices
    )
    scale = np.sqrt(squares / count + NORMALIZATION_EPSILON)
    return (float(mean), float(scale)) if mode == UTTERANCE else (mean, scale)


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How log-Mels are normalized (`config.data.normalization`), the same in training (TF) and
    in evaluation and prediction (numpy).

    `mean` and `scale` (`sqrt(variance + NORMALIZATION_EPSILON)`, one per Mel band): the training
    split's, for `TRAINING_BAND` only (emohrnet_jax.data.normalization computes and stores them).
    """

    mode: str = UTTERANCE
    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.mode not in NORMALIZATIONS:
            raise ValueError(f"normalization {self.mode!r} is not one of {list(NORMALIZATIONS)}")
        if (self.mode == TRAINING_BAND) != (self.mean is not None and self.scale is not None):
            raise ValueError("the training split's mean and scale go with training_band only")

    def statistics(self, mel: np.ndarray) -> tuple[Any, Any]:
        """`(mean, scale)` to normalize `mel` (a whole clip) with, as `normalize` takes them."""
        if self.mode == TRAINING_BAND:
            return np.array(self.mean)[:, None], np.array(self.scale)[:, None]
        return normalization_statistics(mel, self.mode)


def normalize(mel: np.ndarray, statistics: tuple[Any, Any] | None = None) -> np.ndarray:
    """`(mel - mean) / scale` in float64, float32 out: the input pipeline's normalization.

    The numpy twin of `data.pipeline`'s TensorFlow version (a test keeps them equal), for code that
    must not import TensorFlow. `statistics`: the whole clip's `Normalization.statistics`, for
    normalizing a slice of it (default: the per-utterance ones of `mel`).
    """
    mean, scale = normalization_statistics(mel) if statistics is None else statistics
    return ((np.asarray(mel, np.float64) - mean) / scale).astype(np.float32)


def extract(path: str, params: FeatureParams) -> dict[str, Any]:
    """Log-Mel features of one file, or the reason it was rejected (never raises for bad audio).

    Returns `{"mel", "duration", "conversions"}` or `{"error": reason, "detail": text}`.
    """
    try:
        clip = load_audio(path, params)
    except AudioError as error:
        return {"error": error.reason, "detail": str(error)}
    return {
        "mel": log_mel(clip.waveform, params),
        "duration": clip.waveform.shape[0] / params.sample_rate,
        "conversions": clip.conversions,
    }
