"""Tests of prediction: features as in training, windows, the CLI's contract, errors."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
import soundfile

from emohrnet_jax import predict, predict_output, runs
from emohrnet_jax.audio import features, streaming, synthetic
from tests import helpers
from tests import saved_run as saved_run_module

CLASSES = list(synthetic.CLASS_NAMES)


@pytest.fixture(scope="module")
def predictor(saved_run):
    return predict.Predictor(saved_run.workdir)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of real audio files: good ones, odd ones, a corrupt one and a text file."""
    root = tmp_path_factory.mktemp("clips")
    (root / "nested").mkdir()
    soundfile.write(root / "a_16k.wav", helpers.speech(2.0, index=0), 16000, subtype="PCM_16")
    soundfile.write(root / "nested" / "b.flac", helpers.speech(3.0, index=1), 16000)
    stereo = helpers.speech(2.5, 48000, index=2)
    soundfile.write(root / "c_48k_stereo.wav", np.stack([stereo, 0.5 * stereo], 1), 48000)
    soundfile.write(root / "d_30s.wav", helpers.speech(30.0, index=3), 16000, subtype="FLOAT")
    # 0.3 s from the middle of an utterance: 19 frames, shorter than the 32-frame window.
    soundfile.write(root / "e_short.wav", helpers.speech(2.0, index=1)[12000:16800], 16000)
    (root / "f_corrupt.wav").write_bytes(b"RIFF\x00\x01\x02\x03WAVEfmt not really a wav file")
    (root / "notes.txt").write_text("not audio")
    return root


EXPECTED_ORDER = [
    "a_16k.wav",
    "c_48k_stereo.wav",
    "d_30s.wav",
    "e_short.wav",
    "f_corrupt.wav",
    os.path.join("nested", "b.flac"),
]


def _run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "emohrnet_jax.predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize("mode", features.NORMALIZATIONS)
def test_numpy_features_equal_the_training_pipeline(predictor, mode):
    """Normalization (every mode) and padding agree with `data.pipeline` (TensorFlow)."""
    from emohrnet_jax.data import pipeline  # TensorFlow: this test only.

    rng = np.random.default_rng(0)
    fixed = (tuple(rng.normal(-6.0, 1.0, 32)), tuple(rng.uniform(2.0, 5.0, 32)))
    normalizing = features.Normalization(mode, *(fixed if mode == features.TRAINING_BAND else ()))
    for frames in (19, 32):  # shorter than the window, and exactly one window
        # Bands of different levels: per-band and per-utterance statistics differ.
        levels = np.linspace(-12.0, 0.0, 32)[:, None]
        stored = (levels + rng.normal(0.0, 4.0, (32, frames))).astype(features.STORED_DTYPE)
        example = {"mel": stored, "label": 0, "speaker": "s", "id": "i"}
        # No longer than the window: any (seeded) crop is the whole clip, zero-padded.
        seed = np.zeros(2, np.int64)
        normalized = pipeline._normalized(example, normalizing)
        expected = pipeline._crop(normalized, 32, seed)["mel"].numpy()
        ours = list(predictor.windowing.windows(stored, normalizing.statistics(stored)))
        assert len(ours) == 1 and ours[0].shape == (32, 32)
        np.testing.assert_allclose(ours[0], expected, atol=1e-5)
        if mode == features.UTTERANCE:  # the Predictor's own path
            np.testing.assert_array_equal(predictor.windows(features.normalize(stored)), [ours[0]])


def test_the_best_validation_checkpoint_is_served(saved_run, predictor):
    assert predictor.best == {"epoch": 1, "step": 4, "validation_ua": 0.6}
    chex.assert_trees_all_equal(predictor.variables["params"], saved_run.best.params)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(predictor.variables["params"], saved_run.latest.params)


@pytest.mark.slow
def test_one_window_equals_the_model_applied_to_it(saved_run, predictor):
    # (num_frames - 1) * hop samples make exactly num_frames centred frames: no padding.
    waveform = helpers.speech(2.0)[4000 : 4000 + 31 * 256]
    mel = predictor.model_input(waveform, 16000)
    chex.assert_shape(mel, (32, 32))
    result = predictor.predict(waveform, 16000)
    assert result.windows == 1
    direct = saved_run_module.flax_logits(saved_run, mel[None])[0]
    np.testing.assert_allclose(result.logits, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        list(result.probabilities.values()), jax.nn.softmax(direct), rtol=1e-5, atol=1e-6
    )


def test_a_long_clip_averages_overlapping_windows(predictor):
    waveform = helpers.speech(30.0, index=3)
    mel = predictor.model_input(waveform, 16000)
    windows = predictor.windows(mel)
    frames = mel.shape[1]  # 1 + 480000 // 256 = 1876
    starts = [*range(0, frames - 32 + 1, 16)]
    starts += [] if starts[-1] == frames - 32 else [frames - 32]
    chex.assert_shape(windows, (len(starts), 32, 32))
    assert len(starts) > 100
    for i in (0, 1, len(starts) - 1):
        np.testing.assert_array_equal(windows[i], mel[:, starts[i] : starts[i] + 32])
    window_logits = predictor.window_logits(windows)
    assert np.ptp(window_logits, axis=0).max() > 1e-3, "windows should differ"
    result = predictor.predict(waveform, 16000)
    assert result.windows == len(starts)
    np.testing.assert_allclose(result.logits, window_logits.mean(0), rtol=1e-5, atol=1e-6)
    assert result.seconds == pytest.approx(30.0)


def test_predictor_rejects_what_data_preparation_rejects(predictor):
    with pytest.raises(features.AudioError, match="silent"):
        predictor.predict(np.zeros(16000, np.float32), 16000)
    with pytest.raises(features.AudioError, match="shorter than"):
        predictor.predict(helpers.speech(2.0)[:1000], 16000)


def test_folders_are_walked_sorted_audio_only(clips):
    paths = predict.audio_paths([str(clips), str(clips / "missing.wav")])
    assert paths == [os.path.join(str(clips), name) for name in EXPECTED_ORDER] + [
        str(clips / "missing.wav")
    ]


@pytest.mark.slow
def test_cli_scores_a_folder_and_reports_the_corrupt_file(clips, saved_run, predictor, tmp_path):
    output, cache = tmp_path / "predictions.jsonl", tmp_path / "xla"
    result = _run_cli(
        f"--workdir={saved_run.workdir}",
        f"--output={output}",
        "--top_k=2",
        "--workers=2",
        f"--compilation_cache={cache}",
        clips,
    )
    assert result.returncode == predict.EXIT_SOME_FAILED, result.stderr[-3000:]
    assert any(cache.iterdir()), "the compiled model was not cached for the next run"
    assert "1 of 6 files could not be scored" in result.stderr
    assert result.stdout == "" and not os.path.exists(f"{output}.tmp")
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["path"] for line in lines] == [os.path.join(str(clips), n) for n in EXPECTED_ORDER]
    by_name = {os.path.relpath(line["path"], clips): line for line in lines}
    corrupt = by_name.pop("f_corrupt.wav")
    assert corrupt["error"] == "cannot decode audio" and "label" not in corrupt
    assert by_name["d_30s.wav"]["windows"] > 100 and by_name["e_short.wav"]["windows"] == 1
    assert by_name["c_48k_stereo.wav"]["seconds"] == pytest.approx(2.5, abs=0.01)
    for name, line in by_name.items():
        assert "error" not in line, name
        assert list(line["probabilities"]) == CLASSES
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert line["label"] == max(line["probabilities"], key=line["probabilities"].get)
        assert len(line["top_k"]) == 2 and line["top_k"][0]["label"] == line["label"]
        # The Python API on the decoded samples gives the same answer as the command line.
        audio, rate = soundfile.read(clips / name, dtype="float32")
        api = predictor.predict(audio, rate)
        assert api.label == line["label"]
        np.testing.assert_allclose(
            list(api.probabilities.values()), list(line["probabilities"].values()), atol=1e-6
        )


def test_csv_output_with_and_without_top_k(clips, predictor):
    paths = [str(clips / "a_16k.wav"), str(clips / "f_corrupt.wav"), str(clips / "e_short.wav")]
    out = io.StringIO()
    assert predict.write_predictions(predictor, paths, out, "csv", progress=False) == 1
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["path", "label", *CLASSES, "error"]
    assert [row["path"] for row in rows] == paths
    assert rows[1]["label"] == "" and rows[1]["error"].startswith("cannot decode audio")
    for row in (rows[0], rows[2]):
        probabilities = {name: float(row[name]) for name in CLASSES}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(probabilities, key=probabilities.get) and not row["error"]

    out = io.StringIO()
    predict.write_predictions(predictor, paths, out, "csv", top_k=2, progress=False)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    ranked = ["top_1", "probability_1", "top_2", "probability_2"]
    assert list(rows[0]) == ["path", "label", *ranked, "error"]
    assert rows[0]["top_1"] == rows[0]["label"]
    assert float(rows[0]["probability_1"]) >= float(rows[0]["probability_2"])


def test_batches_spanning_files_change_nothing(clips, predictor):
    """Windows of several files share a batch; each file alone (padded batch) gives the same."""
    paths = [str(clips / name) for name in ("a_16k.wav", "e_short.wav", "c_48k_stereo.wav")]
    together = list(predictor.predict_files(paths, workers=2))
    assert [path for path, _ in together] == paths
    assert sum(result.windows for _, result in together) < predictor.batch_size  # one batch
    for path, result in together:
        audio, rate = soundfile.read(path, dtype="float32")
        np.testing.assert_allclose(result.logits, predictor.predict(audio, rate).logits, atol=1e-5)


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_cli_quietly(saved_run, clips, tmp_path):
    """`predict ... | head`: the closed pipe ends the command without a traceback."""
    command = [sys.executable, "-m", "emohrnet_jax.predict", f"--workdir={saved_run.workdir}"]
    process = subprocess.Popen(
        [*command, f"--compilation_cache={tmp_path}", clips / "a_16k.wav"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # Before the first line is written.
    stderr = process.communicate(timeout=300)[1]
    assert process.returncode == predict.EXIT_BROKEN_PIPE, stderr[-3000:]
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-3000:]


@pytest.mark.slow
def test_missing_checkpoint_is_a_clear_cli_error(saved_run, clips, tmp_path):
    shutil.copy(os.path.join(saved_run.workdir, "config.json"), tmp_path / "config.json")
    result = _run_cli(f"--workdir={tmp_path}", clips / "a_16k.wav")
    assert result.returncode == 1
    assert "predict: no checkpoint in" in result.stderr and "train this run first" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_unusable_runs_are_run_errors(saved_run, tmp_path):
    with pytest.raises(runs.RunError, match="is not a folder"):
        predict.Predictor(str(tmp_path / "nowhere"))
    with pytest.raises(runs.RunError, match=r"config\.json is missing"):
        predict.Predictor(str(tmp_path))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(saved_run.workdir, mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["model"]["variant"] = "w18_small_v1"
    (mismatched / "config.json").write_text(json.dumps(config))
    with pytest.raises(runs.RunError, match=r"does not fit the model of its config\.json"):
        predict.Predictor(str(mismatched))


def _write_wav(path, seconds=1.0, index=0):
    # A file object: soundfile cannot open a name that is not valid UTF-8 by itself.
    with open(path, "wb") as file:
        soundfile.write(file, helpers.speech(seconds, index=index), 16000, format="WAV")


@pytest.mark.slow
def test_a_name_that_is_not_utf8_is_scored_with_the_others(saved_run, tmp_path):
    """Issue 21 case 7: one such name used to abort the run and leave `--output`'s .tmp behind."""
    folder = tmp_path / "clips"
    folder.mkdir()
    odd = os.path.join(folder, os.fsdecode(b"clip_\xff.wav"))
    _write_wav(odd)
    _write_wav(folder / "good.wav", index=1)
    output = tmp_path / "predictions.jsonl"
    result = _run_cli(
        f"--workdir={saved_run.workdir}",
        f"--output={output}",
        f"--compilation_cache={tmp_path}",
        folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not os.path.exists(f"{output}.tmp")
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [line["path"] for line in lines] == [f"{folder}/clip_\\xff.wav", f"{folder}/good.wav"]
    assert all("label" in line for line in lines)


def test_a_name_that_is_not_utf8_is_written_safely_as_csv(predictor, tmp_path):
    odd = os.path.join(tmp_path, os.fsdecode(b"clip_\xff.wav"))
    _write_wav(odd)
    paths = [odd, odd + "_missing.wav"]
    with open(tmp_path / "out.csv", "w", encoding="utf-8", newline="") as out:
        assert predict.write_predictions(predictor, paths, out, "csv", progress=False) == 1
    with open(tmp_path / "out.csv", encoding="utf-8") as written:
        rows = list(csv.DictReader(written))
    assert [row["path"] for row in rows] == [
        f"{tmp_path}/clip_\\xff.wav",
        f"{tmp_path}/clip_\\xff.wav_missing.wav",
    ]
    assert rows[0]["label"] in CLASSES and rows[1]["error"].startswith("file not found")


def test_a_missing_file_is_reported_as_not_found(predictor, tmp_path):
    missing = str(tmp_path / "missing.wav")
    ((path, error),) = predictor.predict_files([missing])
    assert path == missing and isinstance(error, features.AudioError)
    assert error.reason == "file not found" and str(error) == f"file not found: {missing}"
    with pytest.raises(features.AudioError, match=r"^file not found"):
        features.load_audio(missing, predictor.feature_params)


def test_linked_folders_are_walked_once_each(predictor, tmp_path):
    """Issue 21 case 9: a linked subfolder used to be skipped without a word."""
    shared, root = tmp_path / "shared", tmp_path / "clips"
    (shared / "deeper").mkdir(parents=True)
    root.mkdir()
    _write_wav(shared / "s.wav")
    _write_wav(shared / "deeper" / "t.wav", index=1)
    _write_wav(root / "a.wav", index=2)
    (root / "linked").symlink_to(shared)  # a linked folder holding clips
    (shared / "deeper" / "up").symlink_to(shared)  # a cycle: back to an ancestor
    paths = predict.audio_paths([str(root)])
    assert paths == [
        os.path.join(root, "a.wav"),
        os.path.join(root, "linked", "s.wav"),
        os.path.join(root, "linked", "deeper", "t.wav"),
    ]
    scored = list(predictor.predict_files(paths))
    assert all(isinstance(result, predict.Prediction) for _, result in scored)


@pytest.mark.parametrize("rate, channels", [(16000, 1), (48000, 2)])
def test_block_wise_features_equal_the_whole_clip(tmp_path, rate, channels):
    """Decoding 0.37 s at a time (20 blocks) gives the features of the whole decoded clip."""
    waveform = helpers.speech(7.3, rate)
    audio = waveform if channels == 1 else np.stack([waveform, 0.5 * waveform], 1)
    path = str(tmp_path / "clip.wav")
    soundfile.write(path, audio, rate, subtype="PCM_16")
    params = features.FeatureParams(n_fft=512, n_mels=32)
    clip = features.load_audio(path, params)
    whole = features.log_mel(clip.waveform, params).astype(features.STORED_DTYPE)
    blocks = streaming.file_log_mel(path, params, block_seconds=0.37)
    assert blocks.samples == len(clip.waveform) and blocks.conversions == clip.conversions
    assert blocks.mel.dtype == whole.dtype and blocks.mel.shape == whole.shape
    # The float32 STFT of a block may differ from the whole's in its last bit, which moves a rare
    # cell across a float16 rounding boundary: at most one float16 step (2**-10 relative).
    np.testing.assert_allclose(blocks.mel, whole, rtol=2**-10, atol=0)
    assert np.mean(blocks.mel != whole) < 1e-3


def test_a_file_read_in_many_blocks_scores_as_in_memory(saved_run, clips, predictor):
    small_blocks = predict.Predictor(saved_run.workdir, block_seconds=1.0)
    paths = [str(clips / name) for name in ("d_30s.wav", "c_48k_stereo.wav", "e_short.wav")]
    for path, result in small_blocks.predict_files(paths):
        audio, rate = soundfile.read(path, dtype="float32")
        expected = predictor.predict(audio, rate)
        assert result.windows == expected.windows and result.seconds == expected.seconds
        # A rare float16 step in the features (see the test above) moves logits by ~4e-6 relative.
        np.testing.assert_allclose(result.logits, expected.logits, rtol=2e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, argument", [("--output=s3://b/p.jsonl", "a.wav"), ("", "s3://b/a.wav")]
)
def test_another_scheme_is_refused_before_anything_is_written(saved_run, tmp_path, flag, argument):
    """gs:// works (tests/test_serving_gcs.py); s3:// and the like are one line, nothing written."""
    flags = [f"--workdir={saved_run.workdir}", *([flag] if flag else [])]
    result = _run_cli(*flags, argument, cwd=tmp_path)
    assert result.returncode == 1
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("predict: ") and "s3:// is not supported" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_tilde_is_expanded(saved_run, tmp_path):
    """`~/...` given without shell expansion names $HOME in --workdir, --output and inputs."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "run").symlink_to(saved_run.workdir)
    _write_wav(home / "clip.wav")
    result = _run_cli(
        "--workdir=~/run",
        "--output=~/p.jsonl",
        f"--compilation_cache={tmp_path / 'xla'}",
        "~/clip.wav",
        cwd=tmp_path,
        env={**os.environ, "HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = (home / "p.jsonl").read_text().splitlines()
    assert json.loads(line)["path"] == str(home / "clip.wav")
    assert not (tmp_path / "~").exists()


def test_output_leaves_no_temporary_file_on_any_error(tmp_path):
    """`--output` is written through `<output>.tmp`, removed whatever stops the writing."""
    output = str(tmp_path / "predictions.jsonl")

    def write(out):
        out.write("half a line")
        raise KeyboardInterrupt  # Not an error that predict handles: it must still clean up.

    with pytest.raises(KeyboardInterrupt):
        predict_output.write_file(write, output)
    assert os.listdir(tmp_path) == []
