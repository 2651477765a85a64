"""The built-in corpus: which utterances it holds, who speaks them and with which emotion.

Each utterance is spoken by one of `num_speakers` synthetic speakers through the source-filter
synthesizer of `speech_synth`.

Emotions differ the way acted emotional speech does: pitch level, range and contour, speaking
rate, loudness and its dynamics, jitter and shimmer, glottal closure and spectral tilt (vocal
effort), and breathiness. Every effect is scaled by a random per-utterance intensity and overlaps
with speaker traits (base F0, tract length, breathiness, tilt, rate) and per-utterance variation
(gain, F0 offset, rate, background noise), so the classes overlap.

Everything random about an utterance derives from its seed; speaker traits derive from the corpus
seed and the speaker id, so a speaker sounds the same in every split.
"""

import dataclasses
import functools
import numbers
import zlib

import numpy as np

from emohrnet_jax.audio import speech_synth

CLASS_NAMES = ("neutral", "happy", "angry", "sad")


@dataclasses.dataclass(frozen=True)
class SyntheticUtterance:
    """One planned utterance; `synthesize` turns it into a waveform."""

    id: str  # e.g. "spk07_u0042"
    speaker: str  # e.g. "spk07"
    label: str  # one of CLASS_NAMES
    seed: int  # everything random about this utterance derives from it


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """Size, clip durations and seed of the synthetic corpus."""

    num_speakers: int = 40
    utterances_per_speaker: int = 80  # a multiple of len(CLASS_NAMES): balanced per speaker
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    seed: int = 0


# How each class speaks, one column per class in CLASS_NAMES order; `_blend` moves an utterance
# from the neutral column toward its own by a random intensity.
# fmt: off
_EMOTION_TABLE = {
    #                  neutral happy  angry   sad
    "f0_st":          (0.0,   3.0,   3.5,   -2.0),   # pitch level over the speaker's, semitones
    "accent_st":      (2.0,   6.0,   4.0,    0.5),   # pitch accent on stressed vowels, semitones
    "accent_rise":    (0.5,   0.6,   0.15,   0.7),   # part of the vowel to the peak: small=abrupt
    "declination_st": (-2.0, -1.0,  -3.0,   -3.5),   # pitch change over a phrase
    "final_st":       (-1.0,  4.5,  -2.0,   -2.0),   # extra movement on a phrase's last vowel
    "duration":       (1.0,   0.82,  0.88,   1.4),   # segment-duration factor, 1 / speaking rate
    "pause":          (1.0,   0.75,  0.8,    1.5),   # pause-duration factor
    "level_db":       (0.0,   2.0,   6.0,   -5.0),   # loudness
    "dynamics_db":    (3.0,   6.0,   7.0,    1.5),   # stressed minus unstressed level
    "attack_s":       (0.02,  0.015, 0.008,  0.04),  # voicing onset and offset ramp
    "jitter":         (0.006, 0.008, 0.012,  0.01),  # std of relative period perturbation
    "shimmer":        (0.03,  0.04,  0.06,   0.05),  # std of relative cycle-amplitude perturbation
    "closing":        (0.16,  0.13,  0.08,   0.24),  # glottal closing phase: short=pressed, bright
    "tilt":           (0.0,   0.2,   0.35,  -0.35),  # > 0 boosts highs (vocal effort)
    "breathiness":    (0.0,   0.0,  -0.03,   0.1),   # added to the speaker's aspiration level
    "formant_scale":  (1.0,   1.08,  1.05,   0.97),  # smiling and an open jaw raise formants
}
# fmt: on
_PLAN_STREAM, _SPEAKER_STREAM = 0, 1


def _check_spec(spec: CorpusSpec) -> None:
    counts = (spec.num_speakers, spec.utterances_per_speaker, spec.seed)
    if not all(isinstance(c, numbers.Integral) for c in counts):
        raise ValueError(f"counts and seed must be integers, got {spec}")
    if spec.num_speakers < 1:
        raise ValueError(f"num_speakers must be >= 1, got {spec.num_speakers}")
    if spec.utterances_per_speaker < 1 or spec.utterances_per_speaker % len(CLASS_NAMES):
        raise ValueError(
            f"utterances_per_speaker must be a positive multiple of {len(CLASS_NAMES)}, "
            f"got {spec.utterances_per_speaker}"
        )
    if not 0.0 < spec.min_seconds <= spec.max_seconds < np.inf:
        raise ValueError(
            f"need 0 < min_seconds <= max_seconds, got {spec.min_seconds}, {spec.max_seconds}"
        )
    if spec.seed < 0:
        raise ValueError(f"seed must be >= 0, got {spec.seed}")


def plan(spec: CorpusSpec) -> list[SyntheticUtterance]:
    """Cheap, deterministic list of every utterance, classes balanced per speaker.

    Raises:
      ValueError: on a non-positive count, utterances per speaker that are not a multiple of the
        number of classes, bad durations or a negative seed.
    """
    _check_spec(spec)
    n = spec.utterances_per_speaker
    speaker_width = max(2, len(str(spec.num_speakers - 1)))
    utterance_width = max(4, len(str(n - 1)))
    utterances = []
    for s in range(spec.num_speakers):
        speaker = f"spk{s:0{speaker_width}d}"
        rng = np.random.default_rng([spec.seed, _PLAN_STREAM, s])
        labels = rng.permutation(np.arange(n) % len(CLASS_NAMES))
        seeds = rng.integers(2**63, size=n)
        utterances += [
            SyntheticUtterance(
                id=f"{speaker}_u{u:0{utterance_width}d}",
                speaker=speaker,
                label=CLASS_NAMES[labels[u]],
                seed=int(seeds[u]),
            )
            for u in range(n)
        ]
    return utterances


@functools.lru_cache(maxsize=1024)
def _speaker(corpus_seed: int, speaker: str) -> speech_synth.Speaker:
    rng = np.random.default_rng([corpus_seed, _SPEAKER_STREAM, zlib.crc32(speaker.encode())])
    female = rng.random() < 0.5
    return speech_synth.Speaker(
        f0=rng.uniform(170.0, 240.0) if female else rng.uniform(90.0, 140.0),
        formant_scale=rng.uniform(1.0, 1.15) if female else rng.uniform(0.85, 1.0),
        bandwidth_scale=rng.uniform(0.8, 1.25),
        breathiness=rng.uniform(0.04, 0.2) if female else rng.uniform(0.02, 0.12),
        tilt=rng.uniform(-0.2, 0.2),
        rate=rng.uniform(0.88, 1.12),
    )


def _blend(label: str, intensity: float) -> speech_synth.Emotion:
    """Moves neutral toward `label`'s column by `intensity` (0: neutral, 1: the stereotype)."""
    column = CLASS_NAMES.index(label)
    return speech_synth.Emotion(
        **{k: (1 - intensity) * r[0] + intensity * r[column] for k, r in _EMOTION_TABLE.items()}
    )


def synthesize(
    utterance: SyntheticUtterance, spec: CorpusSpec, sample_rate: int = 16000
) -> np.ndarray:
    """Renders one utterance as a float32 mono waveform in [-1, 1].

    Args:
      utterance: from `plan(spec)`; its seed fixes everything random about it.
      spec: the corpus; its seed fixes the speaker's traits, its bounds the duration.
      sample_rate: in Hz, at least 8000.

    Returns:
      `(n,)` float32 samples, n / sample_rate uniform in [min_seconds, max_seconds].
    """
    _check_spec(spec)
    if utterance.label not in CLASS_NAMES:
        raise ValueError(f"label {utterance.label!r} is not one of {CLASS_NAMES}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be >= 8000, got {sample_rate}")
    sr = sample_rate
    speaker = _speaker(spec.seed, utterance.speaker)
    rng = np.random.default_rng(utterance.seed)
    n = int(rng.uniform(spec.min_seconds, spec.max_seconds) * sr)
    n = max(min(n, int(np.floor(spec.max_seconds * sr))), int(np.ceil(spec.min_seconds * sr)))

    # Weakly acted utterances are mostly neutral, so intensities start well above 0
    # (docs/training.md, "The demo, in detail").
    intensity = rng.uniform(0.75, 1.0) if utterance.label != "neutral" else 0.0
    emotion = _blend(utterance.label, intensity)
    return speech_synth.speak(rng, n, sr, speaker, emotion)
