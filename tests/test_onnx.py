"""Tests of model.onnx: onnxruntime computes what the Flax model does, with any batch size, and
docs/serving.md's recipe serves a WAV without JAX as `python -m emohrnet_jax.predict` does."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from emohrnet_jax import calibration, export, onnx_export, windows
from emohrnet_jax.models import hrnet
from tests import helpers
from tests import saved_run as saved_run_module

onnxruntime = pytest.importorskip("onnxruntime")  # the `test` extra has it (and jax2onnx)
pytest.importorskip("jax2onnx")

# Fitted on a run's validation split; not 1, so that a model without it is caught.
TEMPERATURE = 1.7
RECIPE = pathlib.Path(__file__).parents[1] / "docs" / "serving.md"


@pytest.fixture(scope="module")
def onnx_run(saved_run, tmp_path_factory):
    """A copy of the saved run with a fitted temperature, and its ONNX export."""
    root = tmp_path_factory.mktemp("onnx")
    workdir = root / "run"
    shutil.copytree(saved_run.workdir, workdir)
    record = {"best_step": 4, "temperature": TEMPERATURE}
    (workdir / calibration.FILE).write_text(json.dumps(record))
    output = root / "export"
    info = export.export_run(str(workdir), str(output), ["onnx"], ["cpu"])
    assert info["temperature"] == TEMPERATURE, "calibration.json was not read"
    return workdir, output


@pytest.fixture(scope="module")
def session(onnx_run):
    return onnxruntime.InferenceSession(
        str(onnx_run[1] / export.ONNX_FILE), providers=["CPUExecutionProvider"]
    )


@pytest.mark.slow
def test_names_shapes_and_a_dynamic_batch(session):
    (mel,) = session.get_inputs()
    assert (mel.name, mel.type, mel.shape) == ("mel", "tensor(float)", ["batch", 32, 32])
    outputs = {output.name: output.shape for output in session.get_outputs()}
    assert outputs == {"logits": ["batch", 4], "probabilities": ["batch", 4]}


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_the_flax_model(session, saved_run, batch):
    mel = np.random.default_rng(batch).standard_normal((batch, 32, 32)).astype(np.float32)
    logits, probabilities = session.run(["logits", "probabilities"], {"mel": mel})
    expected = saved_run_module.flax_logits(saved_run, mel)
    assert logits.shape == probabilities.shape == (batch, 4)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probabilities, windows.softmax(expected, TEMPERATURE), atol=1e-5)


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [(5, 7), (9, 13)])
def test_traceable_resize_is_jax_image_resize(method, size):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(
        onnx_export.traceable_resize(x, *size, method),
        hrnet.resize_to(x, *size, method),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.slow
def test_metadata_names_the_file_and_says_how_to_make_features(onnx_run):
    import onnx

    output = onnx_run[1]
    info = json.loads((output / export.METADATA_FILE).read_text())
    assert info["files"] == {"onnx": export.ONNX_FILE}
    assert info["windows"]["hop_frames"] == 16 and info["temperature"] == TEMPERATURE
    assert info["feature_params"]["n_mels"] == 32 and info["normalization"]["mode"] == "utterance"
    assert "float16" in info["features"] and "log_floor" in info["features"]
    model = onnx.load(str(output / export.ONNX_FILE))
    props = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(props[onnx_export.METADATA_KEY]) == info
    assert sorted(os.listdir(output)) == [export.METADATA_FILE, export.ONNX_FILE]


def _recipe() -> str:
    """The Python block after `<!-- onnx-recipe -->` in docs/serving.md."""
    text = RECIPE.read_text()
    match = re.search(r"<!-- onnx-recipe -->\n```python\n(.*?)\n```", text, re.DOTALL)
    assert match, "docs/serving.md lost its onnx-recipe block"
    return match.group(1)


# Runs the recipe as a script, then reports which of JAX, Flax and TensorFlow it imported.
_RUN_RECIPE = """
import runpy, sys
sys.argv = sys.argv[1:]  # the script, then its arguments
runpy.run_path(sys.argv[0], run_name="__main__")
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"jax", "jaxlib", "flax", "tensorflow"})
print("imported:", heavy, file=sys.stderr)
"""


@pytest.mark.slow
def test_the_documented_recipe_serves_a_wav_as_predict_does(onnx_run, tmp_path):
    """A 3 s stereo clip at 22.05 kHz: downmixed, resampled, several windows averaged."""
    workdir, output = onnx_run
    wave = helpers.speech(3.0, sample_rate=22050)
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, np.stack([wave, 0.5 * wave], axis=1), 22050, subtype="PCM_16")
    script = tmp_path / "serve_onnx.py"
    script.write_text(_recipe())
    served = subprocess.run(
        [sys.executable, "-c", _RUN_RECIPE, str(script), str(output), str(wav)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    assert "imported: []" in served.stderr, served.stderr[-3000:]
    predicted = subprocess.run(
        [sys.executable, "-m", "emohrnet_jax.predict", f"--workdir={workdir}", str(wav)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (line,) = served.stdout.splitlines()
    expected = json.loads(predicted.stdout)
    assert expected["windows"] > 1
    probabilities = json.loads(line)["probabilities"]
    assert list(probabilities) == list(expected["probabilities"])
    np.testing.assert_allclose(
        list(probabilities.values()), list(expected["probabilities"].values()), atol=1e-4
    )


def test_without_jax2onnx_export_writes_the_rest(saved_run, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "available", lambda: False)
    with pytest.raises(ValueError, match="jax2onnx is not installed"):
        export.export_run(saved_run.workdir, str(tmp_path / "none"), ["onnx"], ["cpu"])
    info = export.export_run(saved_run.workdir, str(tmp_path / "model"), ["jax", "onnx"], ["cpu"])
    assert info["files"] == {"jax_export": export.JAX_FILE}
    assert sorted(os.listdir(tmp_path / "model")) == [export.METADATA_FILE, export.JAX_FILE]


@pytest.mark.slow
def test_the_command_says_in_one_line_that_model_onnx_was_not_written(saved_run, tmp_path):
    hide = "import runpy, sys; sys.modules['jax2onnx'] = None; "
    run = "runpy.run_module('emohrnet_jax.export', run_name='__main__')"
    args = [f"--workdir={saved_run.workdir}", f"--output={tmp_path / 'model'}"]
    result = subprocess.run(
        [sys.executable, "-c", hide + run, *args, "--formats=jax,onnx", "--platforms=cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.strip() == f"export: {onnx_export.MISSING}"
    assert "model.jax_exported, metadata.json" in result.stdout
