"""The windows a clip is scored with, shared by evaluation and prediction (no TensorFlow here).

The model sees windows of the training crop's length (`num_frames`), normalized as in training
with the whole clip's statistics (`features.Normalization`). In `UTTERANCE` mode a clip of at most
`num_frames` frames is one window, zero-padded at the end (the mean, once normalized, as in
training), and a longer one is cut into windows every `hop_frames` frames, the last one ending at
the clip's end. `CENTRE_CROP` mode scores the one window at the clip's middle (the crop that
training's evaluation used before whole utterances). A clip's logits are the mean
of its windows' logits, and its probabilities their softmax, at the run's temperature.
"""

import dataclasses
from collections.abc import Iterator

import ml_collections
import numpy as np

from emohrnet_jax.audio import features

UTTERANCE = "utterance"
CENTRE_CROP = "centre_crop"
MODES = (UTTERANCE, CENTRE_CROP)


def default_hop(num_frames: int) -> int:
    """Frames between window starts unless told otherwise: half a window."""
    return max(1, num_frames // 2)


@dataclasses.dataclass(frozen=True)
class Windowing:
    """How a clip of any length becomes windows of `num_frames` frames (see the module)."""

    num_frames: int
    hop_frames: int
    mode: str = UTTERANCE

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"evaluation {self.mode!r} is not one of {list(MODES)}")
        if self.num_frames < 1 or self.hop_frames < 1:
            raise ValueError(
                f"need num_frames >= 1 and hop_frames >= 1, got {self.num_frames}, "
                f"{self.hop_frames}"
            )

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Windowing":
        """The windows `config.evaluation` scores validation and test utterances with."""
        num_frames = int(config.data.num_frames)
        hop = config.get("evaluation_hop_frames") or default_hop(num_frames)
        return cls(num_frames, int(hop), config.get("evaluation", UTTERANCE))

    def starts(self, frames: int) -> list[int]:
        """The first frame of each window of a clip of `frames` frames."""
        excess = frames - self.num_frames
        if excess <= 0:
            return [0]
        if self.mode == CENTRE_CROP:
            return [excess // 2]
        starts = list(range(0, excess + 1, self.hop_frames))
        if starts[-1] != excess:
            starts.append(excess)
        return starts

    def windows(self, mel: np.ndarray, statistics: tuple | None = None) -> Iterator[np.ndarray]:
        """The float32 `(n_mels, num_frames)` windows of a stored log-Mel `(n_mels, frames)`,
        normalized with the whole clip's `statistics` (`features.Normalization.statistics`;
        default: the per-utterance ones of `mel`).

        One at a time: an hour's windows overlap, and stacked they would take 4x the float16 clip.
        """
        if statistics is None:
            statistics = features.normalization_statistics(mel)
        for start in self.starts(mel.shape[1]):
            window = features.normalize(mel[:, start : start + self.num_frames], statistics)
            yield np.pad(window, ((0, 0), (0, self.num_frames - window.shape[1])))


def clip_logits(window_logits: np.ndarray) -> np.ndarray:
    """A clip's logits `(num_classes,)`: the float64 mean of its windows' `(n, num_classes)`."""
    return np.mean(np.asarray(window_logits, np.float64), axis=0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities over the last axis of `logits / temperature` (float64); a class whose logit
    is -inf (left out of a cross-corpus mapping) gets probability 0."""
    scaled = np.asarray(logits, np.float64) / temperature
    scaled = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return scaled / scaled.sum(axis=-1, keepdims=True)
