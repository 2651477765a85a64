"""A source-filter speech synthesizer: segments, F0, glottal source, vocal tract and noise.

The source is a Rosenberg glottal pulse train that follows an F0 contour, with jitter, shimmer and
aspiration noise, through a first-order spectral-tilt filter; the filter is a cascade of five
second-order formant resonators, piecewise constant with short stepped transitions. Unvoiced
consonants are band-passed noise bursts added after the tract. The text is a few sentences of
nonsense syllables from a fixed pool of templates. `speak` renders one utterance from a speaker's
traits and a speaking style; `synthetic` decides what those are for each utterance of the corpus.
"""

import dataclasses
import functools
import typing

import numpy as np
from scipy import signal


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A speaker's traits: what stays the same across their utterances."""

    f0: float  # Hz
    formant_scale: float  # shorter vocal tracts have higher formants
    bandwidth_scale: float
    breathiness: float  # aspiration noise relative to the voiced excitation
    tilt: float  # personal spectral tilt, same units as Emotion.tilt
    rate: float  # personal segment-duration multiplier


class Emotion(typing.NamedTuple):
    """How one utterance is spoken; the emotion table in `synthetic` says what each field means."""

    f0_st: float
    accent_st: float
    accent_rise: float
    declination_st: float
    final_st: float
    duration: float
    pause: float
    level_db: float
    dynamics_db: float
    attack_s: float
    jitter: float
    shimmer: float
    closing: float
    tilt: float
    breathiness: float
    formant_scale: float


# F1-F5 (Hz) of an average adult male tract, F1-F3 after Peterson & Barney (1952).
_VOWELS = {
    "i": (270.0, 2290.0, 3010.0, 3500.0, 4500.0),
    "e": (530.0, 1840.0, 2480.0, 3500.0, 4500.0),
    "a": (730.0, 1090.0, 2440.0, 3500.0, 4500.0),
    "o": (570.0, 840.0, 2410.0, 3500.0, 4500.0),
    "u": (300.0, 870.0, 2240.0, 3500.0, 4500.0),
}
_BANDWIDTHS = (60.0, 90.0, 150.0, 200.0, 250.0)
# Voiced consonants: formants and level relative to a vowel.
_SONORANTS = {
    "m": ((250.0, 1100.0, 2300.0, 3500.0, 4500.0), 0.3),
    "n": ((250.0, 1500.0, 2500.0, 3500.0, 4500.0), 0.3),
    "l": ((360.0, 1300.0, 2700.0, 3500.0, 4500.0), 0.5),
}
# Noise consonants: frication band (Hz), level relative to a vowel, closure before the burst (s).
_OBSTRUENTS = {
    "s": ((3500.0, 7500.0), 0.35, 0.0),
    "f": ((1200.0, 7500.0), 0.12, 0.0),
    "p": ((300.0, 1800.0), 0.3, 0.06),
    "t": ((2500.0, 6500.0), 0.4, 0.06),
    "k": ((1400.0, 3200.0), 0.4, 0.06),
}
# Capitals mark stressed vowels and "|" a phrase break; a syllable is an optional consonant
# ("h" is aspiration through the vowel's formants) and a vowel.
_SENTENCES = (
    "ta kA li mo | sU pe na Ki to",
    "mi lO ha se | pa tI ku no fe",
    "hA no si | ke mU la te | pO sa",
    "nu Ke ta lo fI sa | mo pE ki",
    "e lA mi | to sO ku ni pa hE",
    "fo nI ke sa | lU ma te kO",
    "su Ma | li pO ne ta | kI mo hu",
    "pe lo tA ni | sa kU mi lE no",
)
_DURATIONS = {  # at neutral rate, seconds
    "stressed": 0.15,
    "unstressed": 0.10,
    "sonorant": 0.06,
    "h": 0.06,
    "frication": 0.08,
    "burst": 0.02,
    "phrase_pause": 0.2,
    "sentence_pause": 0.4,
}
_PARSED = tuple(
    tuple(tuple((s[:-1], s[-1].lower(), s[-1].isupper()) for s in p.split()) for p in t.split("|"))
    for t in _SENTENCES
)
_PULSE_POINTS = 2048


@dataclasses.dataclass
class _Segment:
    kind: str  # "vowel", "sonorant", "h" (aspiration through the tract) or "noise"
    start: int  # samples
    stop: int
    level: float  # linear, relative to a vowel at the utterance's level
    formants: tuple[float, ...] = ()
    band: tuple[float, float] = (0.0, 0.0)  # of the noise
    stressed: bool = False
    phrase: int = 0


def _timeline(
    rng: np.random.Generator, n: int, sr: int, emotion: Emotion, speed: float
) -> list[_Segment]:
    """Lays out whole sentences of segments after a short lead-in until `n` samples are filled."""
    segments = []
    t = min(int(rng.uniform(0.05, 0.3) * sr), n // 10)
    phrase = 0

    def length(kind: str) -> int:
        return max(8, int(_DURATIONS[kind] * speed * rng.uniform(0.85, 1.15) * sr))

    def add(kind: str, duration: int, level: float, **fields) -> None:
        nonlocal t
        segments.append(_Segment(kind, t, t + duration, level, phrase=phrase, **fields))
        t += duration

    while t < n:
        for p, syllables in enumerate(_PARSED[rng.integers(len(_PARSED))]):
            if p:
                t += int(length("phrase_pause") * emotion.pause)
            for consonant, vowel, stressed in syllables:
                if consonant in _SONORANTS:
                    formants, level = _SONORANTS[consonant]
                    add("sonorant", length("sonorant"), level, formants=formants)
                elif consonant == "h":
                    add("h", length("h"), 0.3, formants=_VOWELS[vowel])
                elif consonant in _OBSTRUENTS:
                    band, level, closure = _OBSTRUENTS[consonant]
                    t += int(closure * speed * sr)
                    add("noise", length("burst" if closure else "frication"), level, band=band)
                kind = "stressed" if stressed else "unstressed"
                add("vowel", length(kind), 1.0, formants=_VOWELS[vowel], stressed=stressed)
            phrase += 1
        t += int(length("sentence_pause") * emotion.pause)
    return segments


def _f0_contour(
    rng: np.random.Generator, segments: list[_Segment], n: int, sr: int, emotion: Emotion
) -> np.ndarray:
    """Semitones over the utterance's base F0: declination per phrase plus rise-fall accents."""
    vowels = [s for s in segments if s.kind == "vowel"]
    bounds = {}
    for s in vowels:
        bounds[s.phrase] = (bounds.get(s.phrase, (s.start,))[0], s.stop)
    knots_t, knots_st = [], []
    for i, s in enumerate(vowels):
        first, last = bounds[s.phrase]
        span = max(last - first, 1)
        decl_start = emotion.declination_st * (s.start - first) / span
        decl_stop = emotion.declination_st * (s.stop - first) / span
        accent = emotion.accent_st * (rng.uniform(0.7, 1.3) if s.stressed else rng.uniform(0, 0.3))
        is_final = i + 1 == len(vowels) or vowels[i + 1].phrase != s.phrase
        final = emotion.final_st if is_final else 0.0
        knots_t += [s.start, s.start + emotion.accent_rise * (s.stop - s.start), s.stop]
        knots_st += [decl_start, decl_stop + accent + 0.5 * final, decl_stop + 0.3 * accent + final]
    # F0 moves slowly: evaluate it every millisecond and hold it in between.
    hold = max(1, sr // 1000)
    t = np.arange(0, n, hold)
    contour = np.interp(t, knots_t, knots_st)
    # A slow wander, so that no two renditions of a template share a contour.
    rate, phase = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
    contour += 0.4 * np.sin(2 * np.pi * rate * t / sr + phase)
    return np.repeat(contour, hold)[:n]


def _glottal_source(
    rng: np.random.Generator, f0: np.ndarray, sr: int, emotion: Emotion
) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg glottal-flow derivative (unit std) with jitter and shimmer, and the flow."""
    n_cycles = int(np.sum(f0) / sr * 1.3) + 4
    jitter = 1.0 + emotion.jitter * rng.standard_normal(n_cycles)
    shimmer = 1.0 + emotion.shimmer * rng.standard_normal(n_cycles)
    # Index cycles by the unperturbed phase, then integrate the perturbed frequency: each cycle
    # gets its own period without a sample-by-sample loop.
    nominal = np.floor(np.cumsum(f0) / sr).astype(np.int64)
    cycle, frac = np.divmod(np.cumsum(f0 * jitter[nominal]) / sr, 1.0)
    # One period of the flow on a fine grid, looked up rather than evaluated per sample.
    grid = np.linspace(0.0, 1.0, _PULSE_POINTS, endpoint=False)
    opening = 0.4
    pulse = np.where(
        grid < opening,
        0.5 - 0.5 * np.cos(np.pi * grid / opening),
        np.cos(0.5 * np.pi * np.minimum((grid - opening) / emotion.closing, 1.0)),
    )
    flow = pulse[(frac * _PULSE_POINTS).astype(np.int64)] * shimmer[cycle.astype(np.int64)]
    derivative = np.diff(flow, prepend=0.0)
    return derivative / (np.std(derivative) + 1e-12), flow


def _resonators(formants: np.ndarray, bandwidths: np.ndarray, sr: int) -> tuple:
    """Cascades of Klatt resonators (unit gain at DC), one all-pole filter per row of `formants`.

    Returns gains `(k,)` and denominators `(k, 2 * formants.shape[1] + 1)`.
    """
    c = -np.exp(-2 * np.pi * bandwidths / sr) * np.ones_like(formants)
    b = 2 * np.exp(-np.pi * bandwidths / sr) * np.cos(2 * np.pi * formants / sr)
    sections = np.stack([np.ones_like(b), -b, -c], axis=-1)  # (k, formants, 3)
    a = sections[:, 0]
    for i in range(1, sections.shape[1]):
        product = np.zeros((a.shape[0], a.shape[1] + 2))
        for j in range(3):
            product[:, j : j + a.shape[1]] += a * sections[:, i, j : j + 1]
        a = product
    return np.prod(1 - b - c, axis=-1), a


def _vocal_tract(
    x: np.ndarray, segments: list[_Segment], sr: int, formant_scale: float, bw_scale: float
) -> np.ndarray:
    """Filters `x` through formants that step toward each voiced segment's targets."""
    changes = []  # (sample, formants); the tract holds its shape through noise and silence
    previous = None
    for s in segments:
        if s.kind == "noise":
            continue
        target = np.minimum(np.array(s.formants) * formant_scale, 0.45 * sr)
        if previous is None:
            changes.append((0, target))
        else:
            # Three interpolated steps stand in for a smooth formant transition.
            step = min(int(0.01 * sr), (s.stop - s.start) // 4)
            for k in range(1, 4):
                changes.append((s.start + (k - 1) * step, previous + (target - previous) * k / 4))
            changes.append((s.start + 3 * step, target))
        previous = target
    starts = np.minimum([c[0] for c in changes] + [len(x)], len(x))
    gains, denominators = _resonators(
        np.array([c[1] for c in changes]), np.array(_BANDWIDTHS) * bw_scale, sr
    )
    order = denominators.shape[1] - 1
    # The transposed-direct-form state that continues an all-pole filter from its past outputs,
    # zi[k] = -sum_j a[k + 1 + j] * y[-1 - j], so that a change of shape does not click.
    hankel = np.arange(order)[:, None] + np.arange(order)[None, :]
    state = -np.where(hankel < order, denominators[:, 1:][:, np.minimum(hankel, order - 1)], 0.0)
    y = np.zeros(len(x) + order)  # the leading zeros are the filter's initial past
    for k in range(len(changes)):
        start, stop = starts[k], starts[k + 1]
        if stop > start:
            zi = state[k] @ y[start : start + order][::-1]
            y[order + start : order + stop], _ = signal.lfilter(
                gains[k : k + 1], denominators[k], x[start:stop], zi=zi
            )
    return y[order:]


def _envelope(segments: list[_Segment], n: int, sr: int, kinds: set, attack_s: float) -> np.ndarray:
    """Per-sample level of the segments of `kinds`, ramped where such a run starts or stops."""
    env = np.zeros(n)
    for i, s in enumerate(segments):
        if s.kind not in kinds or s.start >= n:
            continue
        w = np.full(min(s.stop, n) - s.start, s.level)
        r = min(int(attack_s * sr), len(w) // 2)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / max(r, 1))
        before, after = segments[i - 1] if i else None, segments[i + 1 : i + 2]
        if not (before and before.kind in kinds and before.stop == s.start):
            w[:r] *= ramp
        if not (after and after[0].kind in kinds and after[0].start == s.stop):
            w[len(w) - r :] *= ramp[::-1]
        env[s.start : s.start + len(w)] = w
    return env


@functools.lru_cache(maxsize=64)
def _band_pass(low: float, high: float, sr: int) -> tuple:
    high = min(high, 0.45 * sr)
    return signal.butter(2, [min(low, 0.5 * high), high], btype="band", fs=sr)


def _voice(
    rng: np.random.Generator,
    segments: list[_Segment],
    n: int,
    sr: int,
    speaker: Speaker,
    emotion: Emotion,
) -> np.ndarray:
    """Voiced and aspirated speech through the vocal tract, unit RMS while voiced."""
    f0_st = emotion.f0_st + rng.uniform(-2.0, 2.0) + _f0_contour(rng, segments, n, sr, emotion)
    voicing, flow = _glottal_source(rng, speaker.f0 * 2 ** (f0_st / 12), sr, emotion)
    voiced_env = _envelope(segments, n, sr, {"vowel", "sonorant"}, emotion.attack_s)
    h_env = _envelope(segments, n, sr, {"h"}, 0.01)
    breathiness = max(speaker.breathiness + emotion.breathiness, 0.0)
    # Aspiration is strongest while the glottis is open.
    aspiration = rng.standard_normal(n) * (breathiness * (0.3 + flow) * voiced_env + h_env)
    # Lip radiation and the formants above F5 brighten speech by about 6 dB/octave; effort and
    # the speaker's voice make that steeper or flatter.
    emphasis = np.clip(0.75 + speaker.tilt + emotion.tilt, 0.0, 0.95)
    excitation = signal.lfilter([1.0, -emphasis], [1.0], voicing * voiced_env + aspiration)
    formant_scale = speaker.formant_scale * emotion.formant_scale
    speech = _vocal_tract(excitation, segments, sr, formant_scale, speaker.bandwidth_scale)
    voiced = voiced_env > 0.05
    return speech / (np.sqrt(np.mean(speech[voiced] ** 2)) if voiced.any() else 1.0)


def _obstruents(rng: np.random.Generator, segments: list[_Segment], n: int, sr: int) -> np.ndarray:
    """The fricatives and stop bursts: band-passed noise at each segment's level."""
    out = np.zeros(n)
    ramp_length = int(0.003 * sr)
    for s in segments:
        if s.kind != "noise" or s.start >= n:
            continue
        b, a = _band_pass(*s.band, sr)
        burst = signal.lfilter(b, a, rng.standard_normal(min(s.stop, n) - s.start))
        edge = np.minimum(np.arange(len(burst)), np.arange(len(burst))[::-1])
        ramp = np.minimum(1.0, edge / ramp_length)
        out[s.start : s.start + len(burst)] = s.level * ramp * burst / (np.std(burst) + 1e-12)
    return out


def speak(
    rng: np.random.Generator, n: int, sr: int, speaker: Speaker, emotion: Emotion
) -> np.ndarray:
    """Renders `n` samples of speech at `sr` Hz, with background noise, peak at most 0.99.

    Args:
      rng: everything random about the utterance is drawn from it, in a fixed order.
      n: the number of samples.
      sr: the sample rate in Hz.
      speaker: the speaker's traits.
      emotion: the speaking style.

    Returns:
      `(n,)` float32 samples in [-1, 1].
    """
    speed = emotion.duration * speaker.rate * rng.uniform(0.85, 1.15)
    segments = _timeline(rng, n, sr, emotion, speed)
    for s in segments:  # stress contrast, and 1 dB of random level variation per segment
        stress_db = 0.5 * emotion.dynamics_db * (1 if s.stressed else -1) + rng.normal()
        s.level *= 10 ** (stress_db / 20)
    speech = _voice(rng, segments, n, sr, speaker, emotion) + _obstruents(rng, segments, n, sr)

    level_db = -24.0 + emotion.level_db + rng.uniform(-6.0, 6.0)
    speech *= 10 ** (level_db / 20)
    # Pinkish background noise, scaled by its stationary std (an AR(1) process's).
    noise = signal.lfilter([1.0], [1.0, -0.7], rng.standard_normal(n)) * np.sqrt(1 - 0.7**2)
    snr_db = rng.uniform(15.0, 40.0)
    speech += noise * 10 ** ((level_db - snr_db) / 20)
    fade = min(int(0.01 * sr), n)
    speech[n - fade :] *= np.linspace(1.0, 0.0, fade)  # the clip may end mid-syllable
    # Scaling rather than clipping keeps the loudest angry clips undistorted.
    peak = np.max(np.abs(speech))
    return (speech * min(1.0, 0.99 / peak) if peak > 0 else speech).astype(np.float32)
