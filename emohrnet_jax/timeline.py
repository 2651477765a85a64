"""The emotion over time of a long recording: speech regions, scored windows, smoothed segments.

1. Voice activity, frame by frame, from the log-Mel the model sees anyway: a frame is speech when
   its energy (all Mel bands) is within `top_db` of the loudest frame so far (librosa.effects.
   split's rule, with a running peak so that a stream decides each frame as it arrives, exactly as
   the offline pass). Gaps shorter than `min_silence` are closed and regions shorter than
   `min_speech` dropped.
2. Windows of the training crop's length every `hop_frames` over the whole recording (the
   Predictor's `windows.Windowing`: the last one ends at the recording's end). Each window is
   scored as a clip of its own (normalized with its own statistics, or the run's training-band
   ones), its probabilities at the run's temperature; a window is speech when at least
   `min_speech_fraction` of its frames are.
3. A Viterbi pass over the speech windows' log-probabilities with a `switch_penalty` (nats) per
   change of label: the most probable label sequence that changes label only where the evidence
   outweighs the penalty, so one stray window does not split a segment.
4. Each speech region's frames take the smoothed label of the nearest speech window (by centre);
   runs of one label are the segments, their probabilities the mean of their windows'.

Nothing here imports JAX: `score` takes the Predictor, the rest works on arrays.
"""

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from emohrnet_jax import windows
from emohrnet_jax.audio import features, streaming

if TYPE_CHECKING:  # For the type hints only: predict imports this module.
    from emohrnet_jax.predict import Predictor

# Columns of the spectrogram overview a Timeline keeps for its picture (whatever the length).
OVERVIEW_COLUMNS = 1200
# Frames per slice for the energy: float64 copies of an hour's log-Mel would take hundreds of MB.
_ENERGY_FRAMES = 4096
# A probability's floor before its log: a class left out of a mapping has probability 0.
_LOG_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class TimelineParams:
    """How speech is found and how strongly the labels are smoothed."""

    top_db: float = 40.0  # A frame within this many dB of the loudest so far is speech.
    min_silence: float = 1.0  # Seconds; shorter gaps (pauses in a phrase) are closed.
    min_speech: float = 0.25  # Seconds; shorter speech regions are dropped.
    min_speech_fraction: float = 0.5  # A window with this fraction of speech frames is speech.
    switch_penalty: float = 3.0  # Nats per label change in the Viterbi pass (0: no smoothing).

    def __post_init__(self):
        if self.top_db <= 0 or self.min_silence < 0 or self.min_speech < 0:
            raise ValueError(f"need top_db > 0, min_silence >= 0, min_speech >= 0: {self}")
        if not 0.0 < self.min_speech_fraction <= 1.0 or self.switch_penalty < 0:
            raise ValueError(f"need 0 < min_speech_fraction <= 1, switch_penalty >= 0: {self}")


@dataclasses.dataclass(frozen=True)
class Window:
    """One scored window: its time span, its probabilities and how much of it is speech."""

    start: float  # Seconds from the recording's start.
    end: float
    probabilities: np.ndarray  # `(num_classes,)` float64, at the run's temperature.
    speech: float  # Fraction of its frames that are speech.


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of speech with one (smoothed) label."""

    start: float  # Seconds.
    end: float
    label: str
    probabilities: dict[str, float]  # Mean over the segment's windows, every class.

    def as_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "label": self.label,
            "probabilities": self.probabilities,
        }


@dataclasses.dataclass(frozen=True)
class Timeline:
    """A recording's segments, and what they were made from (for pictures and services)."""

    segments: list[Segment]
    class_names: tuple[str, ...]
    window_starts: np.ndarray  # `(n,)` seconds.
    window_ends: np.ndarray  # `(n,)` seconds.
    probabilities: np.ndarray  # `(n, num_classes)` each window's, at the run's temperature.
    speech: np.ndarray  # `(n,)` fraction of each window's frames that are speech.
    seconds: float  # The recording's duration at the run's sample rate.
    overview: np.ndarray  # `(n_mels, <= OVERVIEW_COLUMNS)` log-Mel averaged over time bins.

    def windows(self) -> list[Window]:
        """The scored windows, in time order."""
        return [
            Window(float(a), float(b), p, float(s))
            for a, b, p, s in zip(
                self.window_starts, self.window_ends, self.probabilities, self.speech, strict=True
            )
        ]


def frame_energy_db(mel: np.ndarray) -> np.ndarray:
    """Each frame's power over all bands, in dB, of a natural-log Mel power `(n_mels, frames)`."""
    out = np.zeros(mel.shape[1])
    for start in range(0, mel.shape[1], _ENERGY_FRAMES):
        cells = np.asarray(mel[:, start : start + _ENERGY_FRAMES], np.float64)
        peak = cells.max(axis=0)
        out[start : start + _ENERGY_FRAMES] = peak + np.log(np.exp(cells - peak).sum(axis=0))
    return out * (10.0 / np.log(10.0))


class SpeechDetector:
    """Frame-by-frame speech decisions against the loudest frame so far (see the module)."""

    def __init__(self, top_db: float):
        self.top_db = top_db
        self.peak = -np.inf

    def push(self, mel: np.ndarray) -> np.ndarray:
        """`(frames,)` booleans for the next frames `(n_mels, frames)` of the recording."""
        energy = frame_energy_db(mel)
        running = np.maximum.accumulate(np.concatenate([[self.peak], energy]))[1:]
        if len(running):
            self.peak = float(running[-1])
        return energy >= running - self.top_db


def speech_regions(mask: np.ndarray, min_gap: int, min_length: int) -> list[tuple[int, int]]:
    """`[start, end)` frame ranges of speech: gaps under `min_gap` frames closed, then regions
    under `min_length` frames dropped."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    regions: list[list[int]] = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if regions and start - regions[-1][1] < min_gap:
            regions[-1][1] = int(end)
        else:
            regions.append([int(start), int(end)])
    return [(a, b) for a, b in regions if b - a >= min_length]


def viterbi(log_probabilities: np.ndarray, switch_penalty: float) -> np.ndarray:
    """The label sequence `(n,)` maximizing the summed log-probabilities minus `switch_penalty`
    per change; ties keep the current label."""
    n, k = log_probabilities.shape
    if n == 0:
        return np.zeros(0, np.int64)
    score = log_probabilities[0].astype(np.float64)
    back = np.zeros((n, k), np.int64)
    for t in range(1, n):
        best = int(np.argmax(score))
        stay = score >= score[best] - switch_penalty
        back[t] = np.where(stay, np.arange(k), best)
        score = np.where(stay, score, score[best] - switch_penalty) + log_probabilities[t]
    path = np.zeros(n, np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def segments(
    probabilities: np.ndarray,
    starts: Sequence[int],
    num_frames: int,
    mask: np.ndarray,
    frame_seconds: float,
    class_names: Sequence[str],
    params: TimelineParams = TimelineParams(),
    seconds: float | None = None,
) -> list[Segment]:
    """The smoothed segments of a recording from its windows and its frames' speech mask.

    Args:
      probabilities: `(n, num_classes)` of the windows starting at frames `starts`.
      num_frames: a window's length in frames.
      mask: `(frames,)` the speech decision of every frame.
      frame_seconds: seconds between frames.
      seconds: the recording's duration, where segments end at the latest (None: the frames').
    """
    total = len(mask)
    seconds = total * frame_seconds if seconds is None else seconds
    regions = speech_regions(
        mask, round(params.min_silence / frame_seconds), round(params.min_speech / frame_seconds)
    )
    if not regions or not len(starts):
        return []
    starts = np.asarray(starts)
    fraction = np.array([mask[s : s + num_frames].mean() for s in starts])
    chosen = np.flatnonzero(fraction >= params.min_speech_fraction)
    if not len(chosen):  # Only short speech: score it with the windows that overlap it.
        chosen = np.flatnonzero(fraction > 0)
    centres = starts[chosen] + min(num_frames, total) / 2
    log_p = np.log(np.maximum(probabilities[chosen], _LOG_FLOOR))
    path = viterbi(log_p, params.switch_penalty)
    found = []
    for a, b in regions:
        frames = np.arange(a, b)
        nearest = _nearest(centres, frames)
        labels = path[nearest]
        cuts = np.flatnonzero(np.diff(labels)) + 1
        for run in np.split(np.arange(len(frames)), cuts):
            first, last = frames[run[0]], frames[run[-1]] + 1
            inside = (centres >= first) & (centres < last)
            picked = chosen[inside] if inside.any() else chosen[nearest[run[len(run) // 2]]][None]
            mean = probabilities[picked].mean(axis=0)
            found.append(
                Segment(
                    start=round(first * frame_seconds, 3),
                    end=round(min(last * frame_seconds, seconds), 3),
                    label=class_names[int(labels[run[0]])],
                    probabilities={n: float(p) for n, p in zip(class_names, mean, strict=True)},
                )
            )
    return found


def _nearest(centres: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """For each frame, the index of the nearest of the sorted `centres` (the earlier on a tie)."""
    right = np.clip(np.searchsorted(centres, frames), 0, len(centres) - 1)
    left = np.clip(right - 1, 0, len(centres) - 1)
    return np.where(np.abs(frames - centres[left]) <= np.abs(centres[right] - frames), left, right)


def window_inputs(predictor: "Predictor", mel: np.ndarray, starts: Sequence[int]) -> Iterator:
    """The model's input windows at `starts` of a stored log-Mel, each normalized on its own."""
    n = predictor.num_frames
    for start in starts:
        piece = mel[:, start : start + n]
        window = features.normalize(piece, predictor.normalization.statistics(piece))
        yield np.pad(window, ((0, 0), (0, n - window.shape[1])))


def window_probabilities(predictor: "Predictor", mel: np.ndarray, starts: Sequence[int]):
    """`(n, num_classes)` probabilities at the run's temperature of the windows at `starts`."""
    logits = predictor.window_logits(window_inputs(predictor, mel, starts))
    return windows.softmax(logits, predictor.temperature)


def score(
    predictor: "Predictor",
    source: str | np.ndarray,
    sample_rate: int | None = None,
    params: TimelineParams = TimelineParams(),
) -> Timeline:
    """The timeline of an audio file (decoded in blocks) or of a waveform at `sample_rate`.

    Raises:
      features.AudioError: a recording that predict would also reject (missing, undecodable,
        empty, silent, too short).
      ValueError: a waveform without its `sample_rate`.
    """
    fp = predictor.feature_params
    if isinstance(source, str):
        loaded = streaming.file_log_mel(source, fp, predictor.block_seconds)
        mel, samples = loaded.mel, loaded.samples
    else:
        if sample_rate is None:
            raise ValueError("a waveform needs its sample_rate")
        mel, samples = predictor.stored_mel(source, sample_rate)
    frames = mel.shape[1]
    starts = predictor.window_starts(frames)
    probabilities = window_probabilities(predictor, mel, starts)
    mask = SpeechDetector(params.top_db).push(mel)
    frame_seconds = fp.hop_length / fp.sample_rate
    n, seconds = predictor.num_frames, samples / fp.sample_rate
    names = predictor.class_names
    return Timeline(
        segments=segments(probabilities, starts, n, mask, frame_seconds, names, params, seconds),
        class_names=names,
        window_starts=np.asarray(starts) * frame_seconds,
        window_ends=np.minimum((np.asarray(starts) + n) * frame_seconds, seconds),
        probabilities=probabilities,
        speech=np.array([mask[s : s + n].mean() for s in starts]),
        seconds=seconds,
        overview=_overview(mel),
    )


def _overview(mel: np.ndarray) -> np.ndarray:
    """`mel` averaged over at most OVERVIEW_COLUMNS time bins of equal length (float32)."""
    frames = mel.shape[1]
    edges = np.linspace(0, frames, min(OVERVIEW_COLUMNS, frames) + 1).round().astype(int)
    return np.stack(
        [np.asarray(mel[:, a:b], np.float32).mean(axis=1) for a, b in itertools.pairwise(edges)],
        axis=1,
    )
