"""Log-Mel features of an audio file of any length, decoded in blocks so that memory stays bounded.

The result equals `features.log_mel(features.load_audio(path).waveform)` rounded to the stored
float16 (a test checks it): blocks are downmixed as the whole clip is, resampled by one soxr stream
(whose output equals the one-shot resampler's), and framed with the STFT context each frame needs.
Only the float16 log-Mel of the whole clip is kept (~57 MB per hour at 128 bands).
"""

import dataclasses

import numpy as np
import soxr

from emohrnet_jax.audio import features

# Seconds of the file's audio decoded at a time: ~11 MB of 48 kHz stereo float32.
BLOCK_SECONDS = 30.0
# Resampled samples held back from the framer, so the end can still be trimmed to the length the
# one-shot resampler gives (soxr's stream may give a sample or so more).
_HELD_SAMPLES = 1024


@dataclasses.dataclass(frozen=True)
class FileMel:
    """A clip's log-Mel, as the prepared datasets store it, and what it was made from."""

    mel: np.ndarray  # `(n_mels, frames)` STORED_DTYPE, not normalized.
    samples: int  # Length of the mono waveform at the target rate.
    conversions: tuple[str, ...]  # As in `features.Clip`.


class Resampler:
    """Mono blocks at `rate` to the target rate, as `librosa.resample(res_type="soxr_hq")`."""

    def __init__(self, rate: int, target: int):
        self.ratio = target / rate
        self.stream = None if rate == target else soxr.ResampleStream(rate, target, 1, "float32")
        self.received = 0
        self.sent = 0
        self.held = np.zeros(0, np.float32)

    def push(self, mono: np.ndarray) -> np.ndarray:
        """The resampled samples that are final so far."""
        self.received += len(mono)
        if self.stream is None:
            return self._send(mono)
        self.held = np.concatenate([self.held, self.stream.resample_chunk(mono)])
        ready, self.held = np.split(self.held, [max(0, len(self.held) - _HELD_SAMPLES)])
        return self._send(ready)

    def finish(self) -> np.ndarray:
        """The remaining samples, zero-padded or trimmed to librosa's `ceil(samples * ratio)`."""
        if self.stream is None:
            return np.zeros(0, np.float32)
        tail = np.concatenate(
            [self.held, self.stream.resample_chunk(np.zeros(0, np.float32), True)]
        )
        length = int(np.ceil(self.received * self.ratio)) - self.sent
        tail = np.pad(tail[:length], (0, max(0, length - len(tail))))
        return self._send(tail)

    def _send(self, samples: np.ndarray) -> np.ndarray:
        self.sent += len(samples)
        return samples


class Framer:
    """Log-Mel frames of a waveform given in pieces, equal to the centred frames of the whole."""

    def __init__(self, params: features.FeatureParams):
        self.params = params
        # The zeros that centring puts before the first frame.
        self.pending = np.zeros(params.n_fft // 2, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """The stored-dtype frames `(n_mels, k)` that `samples` complete (k may be 0); keeps the
        context of the next ones."""
        n_fft, hop = self.params.n_fft, self.params.hop_length
        self.pending = np.concatenate([self.pending, samples])
        frames = 1 + (len(self.pending) - n_fft) // hop if len(self.pending) >= n_fft else 0
        if not frames:
            return np.zeros((self.params.n_mels, 0), features.STORED_DTYPE)
        used = self.pending[: (frames - 1) * hop + n_fft]
        self.pending = self.pending[frames * hop :]
        return features.log_mel(used, self.params, center=False).astype(features.STORED_DTYPE)

    def finish(self) -> np.ndarray:
        """The last frames, with centring's zeros after the end."""
        return self.push(np.zeros(self.params.n_fft // 2, np.float32))


def file_log_mel(
    path: str, params: features.FeatureParams, block_seconds: float = BLOCK_SECONDS
) -> FileMel:
    """The stored-dtype log-Mel of the audio file `path`, decoded `block_seconds` at a time.

    Raises:
      features.AudioError: as `features.load_audio` (missing, undecodable, empty, non-finite,
        shorter than `params.min_seconds`, silent), checked in the same order.
    """
    with features.open_audio(path) as sound:
        rate, channels = sound.samplerate, sound.channels
        resampler = Resampler(rate, params.sample_rate)
        framer = Framer(params)
        parts = []
        peak = 0.0
        block = max(1, int(block_seconds * rate))
        try:
            for audio in sound.blocks(block, dtype="float32", always_2d=True):
                samples = resampler.push(audio.mean(axis=1))
                peak = _peak(samples, peak)
                parts.append(framer.push(samples))
        except features.DECODE_ERRORS as error:
            raise features.AudioError("cannot decode audio", str(error)) from error
    tail = resampler.finish()
    peak = _peak(tail, peak)
    _check_clip(resampler, peak, params)
    parts += [framer.push(tail), framer.finish()]
    conversions = [f"downmixed {channels} channels to mono"] if channels > 1 else []
    conversions += [f"resampled from {rate} Hz"] if rate != params.sample_rate else []
    return FileMel(np.concatenate(parts, axis=1), resampler.sent, tuple(conversions))


def _peak(samples: np.ndarray, peak: float) -> float:
    """The peak absolute amplitude so far; non-finite samples reject the clip at once."""
    if not len(samples):
        return peak
    if not np.all(np.isfinite(samples)):  # The STFT would refuse them.
        raise features.AudioError("non-finite samples")
    return max(peak, float(np.max(np.abs(samples))))


def _check_clip(resampler: Resampler, peak: float, params: features.FeatureParams) -> None:
    """Rejects the clip as `features.conform` would (non-finite samples are caught earlier)."""
    if resampler.received == 0:
        raise features.AudioError("empty audio")
    seconds = resampler.sent / params.sample_rate
    if seconds < params.min_seconds:
        raise features.AudioError(f"shorter than {params.min_seconds:g} s", f"{seconds:.3f} s")
    if peak < features.SILENCE_PEAK:
        raise features.AudioError("silent")
