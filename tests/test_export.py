"""Tests of export: the jax.export artifact and the SavedModel compute what the Flax model does."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from emohrnet_jax import export, runs
from tests import saved_run as saved_run_module


@pytest.fixture(scope="module")
def exported(saved_run, tmp_path_factory):
    """The command line's jax.export of the saved run (every default platform)."""
    output = tmp_path_factory.mktemp("export") / "model"
    # --formats=jax keeps TensorFlow out of the subprocess; the SavedModel is made in this one.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emohrnet_jax.export",
            f"--workdir={saved_run.workdir}",
            f"--output={output}",
            "--formats=jax",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported epoch 1 (validation UA 0.6000) to {output}" in result.stdout
    return output


@pytest.fixture(scope="module")
def saved_model(saved_run, tmp_path_factory):
    """The SavedModel export of the saved run, made in this process (TensorFlow is loaded here)."""
    output = tmp_path_factory.mktemp("saved_model") / "model"
    export.export_run(saved_run.workdir, str(output), formats=["saved_model"])
    return output


@pytest.fixture(scope="module")
def reference(saved_run):
    """Normalized windows and the Flax model's logits for them (best state)."""
    mel = np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32)
    return mel, saved_run_module.flax_logits(saved_run, mel)


def _check(outputs, logits):
    chex.assert_shape([outputs["logits"], outputs["probabilities"]], logits.shape)
    np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"], jax.nn.softmax(logits), atol=1e-5)


def test_jax_export_runs_any_batch_like_the_flax_model(exported, reference):
    mel, logits = reference
    with open(exported / export.JAX_FILE, "rb") as file:
        loaded = jax.export.deserialize(bytearray(file.read()))
    assert set(loaded.platforms) == {"cpu", "cuda", "tpu"}
    (spec,) = loaded.in_avals
    assert str(spec.shape[0]) == "batch" and spec.shape[1:] == (32, 32)
    _check(loaded.call(mel), logits)
    _check(loaded.call(mel[:1]), logits[:1])  # another batch size, same artifact


def test_saved_model_signature_matches_the_flax_model(saved_model, reference):
    import tensorflow as tf  # This test only: serving through TensorFlow.

    mel, logits = reference
    signature = tf.saved_model.load(str(saved_model / export.SAVED_MODEL_DIR)).signatures[
        export.SIGNATURE
    ]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.name == export.INPUT_NAME and spec.shape.as_list() == [None, 32, 32]
    assert spec.dtype == tf.float32
    outputs = signature(**{export.INPUT_NAME: tf.constant(mel)})
    assert set(outputs) == {"logits", "probabilities"}
    _check({name: value.numpy() for name, value in outputs.items()}, logits)


def test_metadata_says_how_to_make_inputs(exported, saved_run):
    with open(exported / export.METADATA_FILE) as file:
        info = json.load(file)
    assert info["class_names"] == ["neutral", "happy", "angry", "sad"]
    assert info["feature_params"] == runs.feature_params(saved_run.config).as_dict()
    assert info["input"] == {"name": "mel", "shape": [None, 32, 32], "dtype": "float32"}
    assert info["outputs"]["probabilities"]["shape"] == [None, 4]
    assert info["checkpoint"] == {"epoch": 1, "step": 4, "validation_ua": 0.6}
    assert info["files"] == {"jax_export": export.JAX_FILE}
    assert sorted(os.listdir(exported)) == sorted([export.JAX_FILE, export.METADATA_FILE])


def test_export_refuses_to_overwrite_or_to_export_nothing(exported, tmp_path):
    with pytest.raises(FileExistsError, match="not empty"):
        export.export_run(str(tmp_path), str(exported))
    with pytest.raises(runs.RunError, match="config"):
        export.export_run(str(tmp_path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    with pytest.raises(ValueError, match="formats"):
        export.export_run(str(tmp_path), str(tmp_path / "out"), formats=["onnx"])
