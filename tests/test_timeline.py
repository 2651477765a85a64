"""Tests of timelines: speech regions, smoothing and merging, the writers, the CLI, a demo model."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from emohrnet_jax import predict, timeline, timeline_output
from emohrnet_jax.audio import features, recording
from tests import helpers

CLASSES = ("neutral", "happy", "angry", "sad")
# Seconds a segment boundary may be off the constructed recording's (window hop ~1 s).
BOUNDARY_TOLERANCE = 1.0
# Test UA the demo fixture's model must reach before a timeline test trusts it.
DEMO_MIN_UA = 0.85
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probabilities(labels, strength=0.9):
    """`(n, 4)` window probabilities, `strength` on each window's label, the rest shared."""
    out = np.full((len(labels), 4), (1 - strength) / 3)
    out[np.arange(len(labels)), [CLASSES.index(label) for label in labels]] = strength
    return out


# Windows of 4 frames every 2 (centres 2, 4, ..., 18) over 20 frames of 0.1 s, all speech.
_STARTS = list(range(0, 17, 2))
_LABELS = ["neutral"] * 3 + ["happy"] + ["neutral"] * 2 + ["sad"] * 3


def _segments(probabilities, mask=None, penalty=3.0):
    mask = np.ones(20, bool) if mask is None else mask
    params = timeline.TimelineParams(min_silence=0.0, min_speech=0.0, switch_penalty=penalty)
    return timeline.segments(probabilities, _STARTS, 4, mask, 0.1, CLASSES, params)


def test_smoothing_removes_one_stray_window():
    """The penalty outweighs one window's evidence; frames go to the nearest window's label."""
    probabilities = _probabilities(_LABELS, strength=0.7)
    found = _segments(probabilities)
    # Frame 13 is as near window 5 (centre 12) as window 6 (centre 14): the earlier wins.
    assert [(s.start, s.end, s.label) for s in found] == [(0.0, 1.4, "neutral"), (1.4, 2.0, "sad")]
    expected = probabilities[:6].mean(axis=0)
    np.testing.assert_allclose(list(found[0].probabilities.values()), expected)
    np.testing.assert_allclose(list(found[1].probabilities.values()), probabilities[6:].mean(0))


def test_no_smoothing_keeps_every_change():
    found = _segments(_probabilities(_LABELS, strength=0.7), penalty=0.0)
    assert [(s.start, s.end, s.label) for s in found] == [
        (0.0, 0.8, "neutral"),
        (0.8, 1.0, "happy"),
        (1.0, 1.4, "neutral"),
        (1.4, 2.0, "sad"),
    ]


def test_silence_splits_segments_and_yields_none():
    mask = np.ones(20, bool)
    mask[8:12] = False
    params = timeline.TimelineParams(min_silence=0.3, min_speech=0.0, switch_penalty=3.0)
    found = timeline.segments(_probabilities(["angry"] * 9), _STARTS, 4, mask, 0.1, CLASSES, params)
    assert [(s.start, s.end, s.label) for s in found] == [(0.0, 0.8, "angry"), (1.2, 2.0, "angry")]
    assert _segments(_probabilities(["angry"] * 9), mask=np.zeros(20, bool)) == []


def test_speech_regions_close_gaps_and_drop_short_ones():
    mask = np.array([1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1], bool)
    assert timeline.speech_regions(mask, min_gap=2, min_length=2) == [(0, 5), (12, 15)]
    assert timeline.speech_regions(mask, min_gap=0, min_length=0) == [
        (0, 2), (3, 5), (8, 9), (12, 15)
    ]  # fmt: skip
    assert timeline.speech_regions(np.zeros(5, bool), 1, 1) == []


def test_viterbi_is_exact_on_a_small_case():
    log_p = np.log([[0.9, 0.1], [0.4, 0.6], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert timeline.viterbi(log_p, 0.0).tolist() == [0, 1, 0, 1, 1]
    assert timeline.viterbi(log_p, 1.0).tolist() == [0, 0, 0, 1, 1]
    assert timeline.viterbi(log_p, 100.0).tolist() == [1, 1, 1, 1, 1]  # summed: -5.33 > -5.73
    assert timeline.viterbi(np.zeros((0, 2)), 1.0).tolist() == []


def test_speech_detector_is_the_same_in_pieces():
    """The running peak makes the frame decisions independent of how the frames arrive."""
    rng = np.random.default_rng(0)
    mel = rng.normal(-5, 3, (16, 50)).astype(np.float16)
    mel[:, 20:30] = np.log(1e-10)  # digital silence
    whole = timeline.SpeechDetector(40.0).push(mel)
    pieces = timeline.SpeechDetector(40.0)
    parts = [pieces.push(mel[:, a : a + 7]) for a in range(0, 50, 7)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert not whole[20:30].any() and whole[:20].all()


def _hand_made():
    sad = dict(zip(CLASSES, [0.1, 0.1, 0.1, 0.7], strict=True))
    angry = dict(zip(CLASSES, [0.0, 0.0, 1.0, 0.0], strict=True))
    return timeline.Timeline(
        segments=[timeline.Segment(1.0, 2.5, "sad", sad), timeline.Segment(3, 4, "angry", angry)],
        class_names=CLASSES,
        window_starts=np.array([0.0, 1.0, 2.0, 3.0]),
        window_ends=np.array([2.0, 3.0, 4.0, 4.5]),
        probabilities=_probabilities(["sad", "sad", "angry", "angry"]),
        speech=np.array([0.4, 1.0, 0.6, 1.0]),
        seconds=4.5,
        overview=np.zeros((8, 10), np.float32),
    )


def test_formats_parse_back(tmp_path):
    result = _hand_made()
    error = features.AudioError("cannot decode audio", "bad header")
    record = json.loads(json.dumps(timeline_output.record("a/b c.wav", result)))
    assert record["path"] == "a/b c.wav" and record["seconds"] == 4.5
    assert record["segments"][0] == {
        "start": 1.0, "end": 2.5, "label": "sad", "probabilities": result.segments[0].probabilities
    }  # fmt: skip
    assert timeline_output.record("x.wav", error) == {
        "path": "x.wav", "error": "cannot decode audio", "detail": "cannot decode audio: bad header"
    }  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(timeline_output.csv_header(CLASSES))
    writer.writerows(timeline_output.csv_rows("a.wav", result, 4))
    writer.writerows(timeline_output.csv_rows("x.wav", error, 4))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["start"], r["end"], r["label"]) for r in rows] == [
        ("1.000", "2.500", "sad"), ("3.000", "4.000", "angry"), ("", "", "")
    ]  # fmt: skip
    assert float(rows[0]["sad"]) == 0.7 and rows[2]["error"].startswith("cannot decode")
    lines = timeline_output.rttm_lines("folder/my clip.wav", result)
    fields = [line.split() for line in lines]
    assert fields[0] == ["SPEAKER", "my_clip", "1", "1.000", "1.500"] + ["<NA>"] * 2 + [
        "sad", "<NA>", "<NA>"
    ]  # fmt: skip
    assert all(len(f) == 10 for f in fields)
    timeline_output.plot(result, str(tmp_path / "t.png"), title="hand made")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictor(saved_run):
    return predict.Predictor(saved_run.workdir)


@pytest.mark.slow
def test_silent_and_very_short_inputs(predictor):
    """Rejected in one clear reason, as predict rejects them; short speech never crashes."""
    with pytest.raises(features.AudioError, match="silent"):
        predictor.timeline(np.zeros(48000, np.float32), 16000)
    with pytest.raises(features.AudioError, match="shorter than"):
        predictor.timeline(helpers.speech(1.0)[:1600], 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        predictor.timeline(helpers.speech(1.0))
    short = predictor.timeline(helpers.speech(1.0)[:4800], 16000)  # 0.3 s: under one window
    assert len(short.window_starts) == 1 and len(short.segments) <= 1
    quiet = np.concatenate([helpers.speech(1.0), np.zeros(32000, np.float32)])
    result = predictor.timeline(quiet, 16000)
    assert all(s.end <= 1.1 for s in result.segments)
    assert all(set(s.probabilities) == set(CLASSES) for s in result.segments)


@pytest.mark.slow
def test_workers_score_ahead_in_order(predictor, tmp_path):
    """`--workers` threads give the lines of one thread, in the files' order, failures counted."""
    paths = []
    for index, seconds in enumerate([2.0, 4.0, 1.0]):
        paths.append(str(tmp_path / f"{index}.wav"))
        soundfile.write(paths[-1], helpers.speech(seconds, index=index), 16000, subtype="PCM_16")
    paths.insert(1, str(tmp_path / "missing.wav"))
    written = {}
    for workers in (0, 3):
        out = io.StringIO()
        failed = timeline_output.write_timelines(predictor, paths, out, workers=workers)
        written[workers] = (failed, [json.loads(line) for line in out.getvalue().splitlines()])
    assert written[3] == written[0]
    assert written[0][0] == 1 and [line["path"] for line in written[0][1]] == paths


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "emohrnet_jax.predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_contract(saved_run, tmp_path):
    """One JSON line per file (`path` and `segments`, or `error`), CSV, RTTM and the PNGs."""
    clip = tmp_path / "clip.wav"
    audio = np.concatenate([helpers.speech(3.0), np.zeros(32000), helpers.speech(2.0, index=1)])
    soundfile.write(clip, audio, 16000, subtype="PCM_16")
    missing = tmp_path / "missing.wav"
    done = _run_cli(
        f"--workdir={saved_run.workdir}", "--timeline", f"--timeline_png={tmp_path / 'png'}",
        clip, missing,
    )  # fmt: skip
    assert done.returncode == predict.EXIT_SOME_FAILED, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["path"] == str(clip) and lines[1]["error"] == "file not found"
    for segment in lines[0]["segments"]:
        assert set(segment) == {"start", "end", "label", "probabilities"}
        assert 0 <= segment["start"] < segment["end"] <= 7.0
    assert sorted(os.listdir(tmp_path / "png")) == ["clip.wav.png"]
    as_csv = _run_cli(f"--workdir={saved_run.workdir}", "--timeline", "--format=csv", clip)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == max(1, len(lines[0]["segments"])) and set(CLASSES) <= set(rows[0])
    as_rttm = _run_cli(f"--workdir={saved_run.workdir}", "--timeline", "--format=rttm", clip)
    assert [line.split()[7] for line in as_rttm.stdout.splitlines()] == [
        segment["label"] for segment in lines[0]["segments"]
    ]
    refused = _run_cli(f"--workdir={saved_run.workdir}", "--format=rttm", clip)
    assert refused.returncode == 1 and "need --timeline" in refused.stderr


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """A run of configs/demo.py trained for 6 epochs (2-6 min on 2 CPU cores), or the run that
    EMOHRNET_JAX_DEMO_RUN names (to reuse one while developing)."""
    if os.environ.get("EMOHRNET_JAX_DEMO_RUN"):
        return os.environ["EMOHRNET_JAX_DEMO_RUN"]
    root = tmp_path_factory.mktemp("demo")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # Train as a user would: one device, XLA's optimizations on.
    subprocess.run(
        [
            sys.executable, "-m", "emohrnet_jax.main", f"--config={_REPOSITORY}/configs/demo.py",
            f"--workdir={root / 'run'}", "--config.num_epochs=6",
            f"--config.data.data_dir={root / 'data'}",
        ],
        check=True, capture_output=True, timeout=1200, env=env, cwd=_REPOSITORY,
    )  # fmt: skip
    return str(root / "run")


@pytest.mark.slow
def test_constructed_recording_with_the_demo_model(demo_run, tmp_path):
    """Neutral 10 s, angry 8 s, silence 3 s, sad 10 s: the segments follow the clips."""
    with open(os.path.join(demo_run, "results.json")) as file:
        assert json.load(file)["test"]["ua"] >= DEMO_MIN_UA
    path = tmp_path / "constructed.wav"
    recording.write_tiled(str(path), 31.0)
    found = predict.Predictor(demo_run).timeline(str(path)).segments
    assert [s.label for s in found] == ["neutral", "angry", "sad"]
    for segment, (start, end, label) in zip(found, recording.boundaries(), strict=True):
        assert abs(segment.start - start) <= BOUNDARY_TOLERANCE, (segment, start, label)
        assert abs(segment.end - end) <= BOUNDARY_TOLERANCE, (segment, end, label)
        assert segment.probabilities[label] == max(segment.probabilities.values())
    assert not any(s.start < 20.5 and s.end > 18.5 for s in found)  # the silence, 18-21 s
