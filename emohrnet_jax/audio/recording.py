"""Constructed recordings with known emotion changes, from the synthetic corpus's speakers.

For testing timelines (tests/test_timeline.py) and measuring them on long files
(tools/make_recording.py): stretches of one emotion made of several utterances of one speaker,
and digital silence between them.
"""

import numpy as np
import soundfile

from emohrnet_jax.audio import synthetic

# (label, seconds); None: digital silence. Labels change at 10 s and 18 s; silence 18-21 s.
PLAN = (("neutral", 10.0), ("angry", 8.0), (None, 3.0), ("sad", 10.0))
# A speaker of the demo's test split (fold 0 holds out spk00-spk05 for testing), so a demo
# model has not heard them.
SPEAKER = "spk01"


def constructed(plan=PLAN, sample_rate: int = 16000, speaker: str = SPEAKER) -> np.ndarray:
    """The float32 waveform of `plan`: each stretch several utterances of its class by `speaker`
    (the demo corpus's), cut to the stretch's length."""
    spec = synthetic.CorpusSpec(num_speakers=30, utterances_per_speaker=48, seed=0)
    utterances = [u for u in synthetic.plan(spec) if u.speaker == speaker]
    parts = []
    for label, seconds in plan:
        length = round(seconds * sample_rate)
        if label is None:
            parts.append(np.zeros(length, np.float32))
            continue
        pieces, total = [], 0
        for utterance in (u for u in utterances if u.label == label):
            pieces.append(synthetic.synthesize(utterance, spec, sample_rate))
            total += len(pieces[-1])
            if total >= length:
                break
        parts.append(np.concatenate(pieces)[:length])
    return np.concatenate(parts)


def boundaries(plan=PLAN) -> list[tuple[float, float, str]]:
    """The `(start, end, label)` of each speech stretch of `plan`."""
    out, time = [], 0.0
    for label, seconds in plan:
        if label is not None:
            out.append((time, time + seconds, label))
        time += seconds
    return out


def write_tiled(
    path: str, seconds: float, plan=PLAN, sample_rate: int = 16000, noise_db: float | None = None
) -> float:
    """Writes `constructed(plan)` repeated to `seconds` as a 16-bit WAV, one repeat at a time
    (an hour's waveform is never held); returns the seconds written.

    `noise_db`: white noise of this RMS level (dB re full scale) added throughout (None: none).
    """
    once = constructed(plan, sample_rate)
    if noise_db is not None:
        noise = np.random.default_rng(0).normal(0.0, 10 ** (noise_db / 20), len(once))
        once = np.clip(once + noise, -1.0, 1.0).astype(np.float32)
    length = round(seconds * sample_rate)
    with soundfile.SoundFile(path, "w", sample_rate, 1, subtype="PCM_16") as out:
        written = 0
        while written < length:
            piece = once[: length - written]
            out.write(piece)
            written += len(piece)
    return written / sample_rate
