"""Prediction and export with gs:// runs, inputs and outputs, against a Cloud Storage emulator."""

import json
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile

from emohrnet_jax import export, export_folder, files, predict, storage
from tests import helpers

# A command that fails on a missing bucket must do so this fast, Python's and JAX's start included.
_QUICK_FAILURE_S = 30


def _run(module, *args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", f"emohrnet_jax.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A local folder of audio: a 16 kHz WAV, a nested FLAC, 48 kHz stereo, a corrupt file, text."""
    root = tmp_path_factory.mktemp("clips")
    (root / "nested").mkdir()
    soundfile.write(root / "a.wav", helpers.speech(2.0, 16000, 0), 16000, subtype="PCM_16")
    soundfile.write(root / "nested" / "b.flac", helpers.speech(3.0, 16000, 1), 16000)
    stereo = helpers.speech(2.5, 48000, 2)
    soundfile.write(root / "c_stereo.wav", np.stack([stereo, 0.5 * stereo], 1), 48000)
    (root / "d_corrupt.wav").write_bytes(b"RIFF\x00\x01\x02\x03WAVEfmt not really a wav file")
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture
def gcs_run(saved_run, gcs):
    """The session's saved run, uploaded to the test's prefix."""
    url = f"{gcs}/runs/demo"
    storage.upload_tree(saved_run.workdir, url)
    return url


def test_a_prefix_is_listed_in_the_order_a_folder_is_walked(gcs, tmp_path):
    for name in ["z.wav", "A.WAV", "notes.txt", "x.wav", "ab/c.wav", "x/y.wav", "x/a/b.ogg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    storage.upload_tree(str(tmp_path), f"{gcs}/clips")
    extensions = predict.AUDIO_EXTENSIONS
    walked = [
        os.path.relpath(path, tmp_path) for path in files.walk_files(str(tmp_path), extensions)
    ]
    # Files before subfolders in each folder, which a plain sort of the names would not give.
    assert walked == ["A.WAV", "x.wav", "z.wav", "ab/c.wav", "x/y.wav", "x/a/b.ogg"]
    listed = list(files.walk_files(f"{gcs}/clips/", extensions))
    assert listed == [f"{gcs}/clips/{name}" for name in walked]
    arguments = [f"{gcs}/clips/x", f"{gcs}/clips/z.wav", f"{gcs}/clips/missing.wav"]
    assert predict.audio_paths(arguments) == [
        f"{gcs}/clips/x/{n}" for n in ("y.wav", "a/b.ogg")
    ] + [
        f"{gcs}/clips/z.wav",
        f"{gcs}/clips/missing.wav",
    ]


def test_a_gs_run_serves_its_best_checkpoint(gcs_run, saved_run):
    import chex

    predictor = predict.Predictor(gcs_run)
    assert predictor.best == {"epoch": 1, "step": 4, "validation_ua": 0.6}
    chex.assert_trees_all_equal(predictor.variables["params"], saved_run.best.params)


@pytest.mark.slow
def test_predict_from_a_gs_run_on_gs_audio_to_a_gs_output(gcs_run, saved_run, clips, gcs, tmp_path):
    storage.upload_tree(str(clips), f"{gcs}/clips")
    output = f"{gcs}/out/predictions.jsonl"
    arguments = [f"{gcs}/clips", f"{gcs}/clips/a.wav", f"{gcs}/clips/missing.wav"]
    result = _run(
        "predict",
        f"--workdir={gcs_run}",
        f"--output={output}",
        "--workers=2",
        f"--compilation_cache={tmp_path / 'xla'}",
        *arguments,
        cwd=tmp_path,
    )
    assert result.returncode == predict.EXIT_SOME_FAILED, result.stderr[-3000:]
    assert "2 of 6 files could not be scored" in result.stderr and result.stdout == ""
    assert storage.list_files(f"{gcs}/out") == ["predictions.jsonl"]  # no temporary object
    assert sorted(os.listdir(tmp_path)) == ["xla"]  # nothing written locally but the cache
    lines = [json.loads(line) for line in storage.read_text(output).splitlines()]
    names = ["a.wav", "c_stereo.wav", "d_corrupt.wav", "nested/b.flac", "a.wav", "missing.wav"]
    assert [line["path"] for line in lines] == [f"{gcs}/clips/{name}" for name in names]
    assert lines[2]["error"] == "cannot decode audio" and lines[5]["error"] == "file not found"

    # The same files of the same run, read locally.
    local = predict.Predictor(saved_run.workdir)
    paths = [str(clips / name) for name in names[:2] + names[3:5]]
    expected = [result for _, result in local.predict_files(paths)]
    for line, prediction in zip(lines[:2] + lines[3:5], expected, strict=True):
        assert line["label"] == prediction.label and line["windows"] == prediction.windows
        np.testing.assert_allclose(
            list(line["probabilities"].values()), list(prediction.probabilities.values()), atol=1e-6
        )


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_missing_output_bucket_is_one_line_at_once(saved_run, tmp_path, gcs_server, command):
    output = "gs://no-such-bucket/out" + (".jsonl" if command == "predict" else "")
    args = ["--formats=jax"] if command == "export" else [tmp_path / "clip.wav"]
    start = time.monotonic()
    result = _run(command, f"--workdir={saved_run.workdir}", f"--output={output}", *args)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr[-3000:]
    (message,) = result.stderr.strip().splitlines()
    where = "the folder of --output=gs://no-such-bucket" if command == "predict" else "--output="
    assert message.startswith(f"{command}: {where}") and message.endswith(
        "bucket gs://no-such-bucket does not exist"
    )
    assert elapsed < _QUICK_FAILURE_S


def _local_files(folder) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, name), folder): open(
            os.path.join(root, name), "rb"
        ).read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def _objects(url) -> dict[str, bytes]:
    return {name: storage.path(f"{url}/{name}").read_bytes() for name in storage.list_files(url)}


@pytest.mark.slow
def test_export_from_a_gs_run_to_a_gs_output_equals_a_local_export(
    gcs_run, saved_run, gcs, tmp_path
):
    output = f"{gcs}/exported/demo"
    result = _run(
        "export", f"--workdir={gcs_run}", f"--output={output}", "--formats=jax", "--platforms=cpu"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported epoch 1 (validation UA 0.6000) to {output}" in result.stdout
    local = tmp_path / "demo"
    export.export_run(saved_run.workdir, str(local), ["jax"], ["cpu"])
    uploaded, written = _objects(output), _local_files(local)
    assert sorted(uploaded) == sorted(written) == [export.METADATA_FILE, export.JAX_FILE]
    assert json.loads(uploaded[export.METADATA_FILE]) == json.loads(written[export.METADATA_FILE])
    assert _program(uploaded[export.JAX_FILE]) == _program(written[export.JAX_FILE])


def _program(serialized: bytes) -> list[str]:
    """The StableHLO of a jax.export artifact without its source locations (of the caller)."""
    text = jax.export.deserialize(bytearray(serialized)).mlir_module()
    return [
        re.sub(r" loc\(#loc\d*\)", "", line)
        for line in text.splitlines()
        if not line.startswith("#loc")
    ]


def _other_run(prefix):
    storage.write_json_atomically(f"{prefix}/experiments/old/config.json", {})
    storage.write_bytes_atomically(f"{prefix}/experiments/old/checkpoints/4/_METADATA", b"{}")


def _ordinary(prefix):
    storage.write_bytes_atomically(f"{prefix}/notes.txt", b"keep me")
    storage.write_json_atomically(f"{prefix}/metadata.json", {"class_names": ["a"]})  # not ours


def _an_export(prefix):
    info = {key: {} for key in export_folder.EXPORT_KEYS}
    storage.write_json_atomically(f"{prefix}/{export.METADATA_FILE}", info)
    storage.write_bytes_atomically(f"{prefix}/{export.JAX_FILE}", b"old")


@pytest.mark.parametrize(
    "where, make, overwrite, reason",
    [
        ("runs/demo", None, True, "holds the training run"),  # the run itself
        ("runs", None, True, "holds the training run"),  # the run's parent prefix
        ("other", _other_run, True, "holds the training run gs://.*/other/experiments/old$"),
        ("ordinary", _ordinary, True, "replaces only a previous export"),
        ("previous", _an_export, False, r"is not empty \(pass --overwrite"),
        ("object", lambda url: storage.write_bytes_atomically(url, b"x"), True, "is an object"),
    ],
    ids=[
        "the_run",
        "parent_of_the_run",
        "holds_another_run",
        "not_an_export",
        "no_overwrite",
        "object",
    ],
)
def test_overwrite_rules_hold_for_a_gs_output(gcs_run, gcs, where, make, overwrite, reason):
    output = f"{gcs}/{where}"
    if make:
        make(output)
    before = _objects(gcs)
    with pytest.raises(FileExistsError, match=reason):
        export.export_run(gcs_run, output, ["jax"], ["cpu"], overwrite=overwrite)
    assert _objects(gcs) == before


@pytest.mark.slow
def test_overwrite_replaces_a_gs_export_and_an_upload_cut_short(gcs_run, gcs):
    output = f"{gcs}/runs/demo/export"  # inside the run, as a local export may be
    _an_export(output)
    storage.write_bytes_atomically(f"{output}/{export.SAVED_MODEL_DIR}/saved_model.pb", b"old")
    info = export.export_run(gcs_run, output, ["jax"], ["cpu"], overwrite=True)
    # Exactly the new export's objects: the old SavedModel is gone.
    assert storage.list_files(output) == [export.METADATA_FILE, export.JAX_FILE]
    assert storage.read_json(f"{output}/{export.METADATA_FILE}") == info
    new_model = _program(storage.path(f"{output}/{export.JAX_FILE}").read_bytes())

    # A killed upload leaves the files without metadata.json (removed first, written last).
    storage.path(f"{output}/{export.METADATA_FILE}").unlink()
    with pytest.raises(FileExistsError, match="not empty"):
        export.export_run(gcs_run, output, ["jax"], ["cpu"])
    export.export_run(gcs_run, output, ["jax"], ["cpu"], overwrite=True)
    assert storage.read_json(f"{output}/{export.METADATA_FILE}") == info
    assert _program(storage.path(f"{output}/{export.JAX_FILE}").read_bytes()) == new_model
    assert storage.exists(f"{gcs_run}/config.json")
