"""Tests of streaming: windows scored as chunks arrive equal the offline timeline's; stdin."""

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile

from emohrnet_jax import predict
from emohrnet_jax.audio import recording
from tests import helpers


@pytest.fixture(scope="module")
def predictor(saved_run):
    return predict.Predictor(saved_run.workdir)


@pytest.fixture(scope="module")
def recording_file(tmp_path_factory):
    """5.3 s at 16 kHz, int16: speech, 1 s of silence, speech (not a whole number of hops)."""
    path = tmp_path_factory.mktemp("stream") / "clip.wav"
    audio = np.concatenate([helpers.speech(2.5), np.zeros(16000), helpers.speech(1.8, index=1)])
    soundfile.write(path, audio, 16000, subtype="PCM_16")
    return str(path)


def _streamed(predictor, path, rate=None, chunk_seconds=0.1, channels=1):
    audio, file_rate = soundfile.read(path, dtype="int16")
    rate = rate or file_rate
    live = predictor.stream(rate, channels)
    size = round(chunk_seconds * rate)
    out = []
    for start in range(0, len(audio), size):
        out += live.push(audio[start : start + size])
    return out + live.finish()


def _assert_same(streamed, offline):
    assert [(w.start, w.end) for w in streamed] == [(w.start, w.end) for w in offline]
    np.testing.assert_allclose(
        np.stack([w.probabilities for w in streamed]),
        np.stack([w.probabilities for w in offline]),
        atol=1e-5,
    )
    assert [w.speech for w in streamed] == [w.speech for w in offline]


@pytest.mark.slow
def test_streaming_equals_offline(predictor, recording_file):
    """Fed in 100 ms int16 chunks, the stream gives the timeline's windows, in order."""
    offline = predictor.timeline(recording_file).windows()
    _assert_same(_streamed(predictor, recording_file), offline)
    assert len(offline) > 10  # the hop grid, the last window ending at the end


def test_streaming_resamples_as_offline(predictor, tmp_path):
    """At 22.05 kHz stereo, in 37 ms chunks: soxr's stream, the downmix and the end's trim."""
    mono = helpers.speech(3.3, 22050)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([mono, 0.3 * mono], 1), 22050, subtype="PCM_16")
    offline = predictor.timeline(str(path)).windows()
    _assert_same(_streamed(predictor, str(path), chunk_seconds=0.037, channels=2), offline)


def test_short_and_empty_streams(predictor):
    """Under one window: one padded window at the end; nothing in, nothing out."""
    live = predictor.stream(16000)
    assert live.push(helpers.speech(1.0)[:4000]) == []
    [window] = live.finish()
    assert window.start == 0.0 and window.end == pytest.approx(0.256, abs=0.02)
    assert predictor.stream(16000).finish() == []
    with pytest.raises(ValueError, match="finished"):
        live.push(np.zeros(10, np.float32))


@pytest.mark.slow
def test_memory_does_not_grow_with_the_stream(saved_run):
    """Python's allocations at 20 s and at 80 s of streamed audio peak alike."""
    sparse = predict.Predictor(saved_run.workdir, hop_frames=320)  # a window every 5 s: quick
    chunk = (helpers.speech(2.0) * 32767).astype(np.int16)[:1600]
    peaks = []
    for seconds in (20, 80):
        live = sparse.stream(16000)
        tracemalloc.start()
        for _ in range(seconds * 10):
            live.push(chunk)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0] + 100_000, peaks


def test_timeline_memory_grows_only_with_the_log_mel(predictor, tmp_path):
    """An 8x longer file adds about its float16 log-Mel, far less than its waveform, to the peak."""
    peaks = []
    for seconds in (30, 240):
        path = tmp_path / f"{seconds}.wav"
        recording.write_tiled(str(path), seconds)
        tracemalloc.start()
        predictor.timeline(str(path))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    waveform_bytes = 210 * 16000 * 4  # the added seconds' float32 samples
    assert peaks[1] - peaks[0] < 0.25 * waveform_bytes, peaks


@pytest.mark.slow
def test_stdin_command(saved_run, predictor, recording_file):
    """Raw s16le on stdin: one JSON line per window, as the offline timeline's windows."""
    audio, _ = soundfile.read(recording_file, dtype="int16")
    done = subprocess.run(
        [sys.executable, "-m", "emohrnet_jax.stream", f"--workdir={saved_run.workdir}",
         "--sample_rate=16000", "--channels=1", "--format=s16le"],
        input=audio.astype("<i2").tobytes(), capture_output=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    offline = predictor.timeline(recording_file).windows()
    assert [(line["start"], line["end"]) for line in lines] == [
        (round(w.start, 3), round(w.end, 3)) for w in offline
    ]
    for line, window in zip(lines, offline, strict=True):
        assert set(line) == {"start", "end", "label", "probabilities", "speech"}
        got = list(line["probabilities"].values())
        np.testing.assert_allclose(got, window.probabilities, atol=1e-5)
        assert line["label"] == predictor.class_names[int(np.argmax(window.probabilities))]
