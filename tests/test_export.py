"""Tests of export: the jax.export artifact and the SavedModel compute what the Flax model does."""

import json
import os
import re
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from emohrnet_jax import export, models, runs
from emohrnet_jax.models import fast_conv
from tests import saved_run as saved_run_module


def _run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "emohrnet_jax.export", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def exported(saved_run, tmp_path_factory):
    """The command line's jax.export of the saved run (every default platform)."""
    output = tmp_path_factory.mktemp("export") / "model"
    # --formats=jax keeps TensorFlow out of the subprocess; the SavedModel is made in this one.
    result = _run_cli(f"--workdir={saved_run.workdir}", f"--output={output}", "--formats=jax")
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


@pytest.mark.slow
def test_jax_export_runs_any_batch_like_the_flax_model(exported, reference):
    mel, logits = reference
    with open(exported / export.JAX_FILE, "rb") as file:
        loaded = jax.export.deserialize(bytearray(file.read()))
    assert set(loaded.platforms) == {"cpu", "cuda", "tpu"}
    (spec,) = loaded.in_avals
    assert str(spec.shape[0]) == "batch" and spec.shape[1:] == (32, 32)
    _check(loaded.call(mel), logits)
    _check(loaded.call(mel[:1]), logits[:1])  # another batch size, same artifact


@pytest.mark.slow
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


# A dot_general contracting a (batch, height, width, channels) map's channels: how
# fast_conv.PointwiseConv, fast_conv.PatchConv and fast_conv.materialize appear in StableHLO.
_CHANNEL_MATMUL = re.compile(
    r"stablehlo\.dot_general [^:]*contracting_dims = \[3\] x \[0\][^:]*: \(tensor<\?x\d+x\d+x"
)


def _convolutions_and_channel_matmuls(exported: jax.export.Exported) -> tuple[int, int]:
    """How many of each op `exported` has; the text repeats an op in each platform's branch,
    so each distinct line counts once."""
    lines = {line.strip() for line in exported.mlir_module().splitlines()}
    convolutions = sum("= stablehlo.convolution" in line for line in lines)
    return convolutions, sum(bool(_CHANNEL_MATMUL.search(line)) for line in lines)


@pytest.mark.slow
def test_the_export_has_none_of_the_training_rewrites_of_its_host(exported, saved_run):
    """The command's export, made on this host (CPU in CI), for cpu, cuda and tpu: the 1x1
    convolutions are PointwiseConv matmuls and every other convolution is XLA's; no PatchConv
    matmul, no identity matmul of `fast_conv.materialize`. (A forward program has no kernel
    gradient, so none of `fast_conv.conv_with_matmul_kernel_grad`.) The model built for training
    on this host, exported the same way, carries its backend's rewrites: the test sees them."""
    with open(exported / export.JAX_FILE, "rb") as file:
        served = jax.export.deserialize(bytearray(file.read()))
    kernels = [k.shape for k in jax.tree.leaves(saved_run.best.params) if k.ndim == 4]
    pointwise = sum(shape[:2] == (1, 1) for shape in kernels)
    assert _convolutions_and_channel_matmuls(served) == (len(kernels) - pointwise, pointwise)

    training = models.create_model(saved_run.config)
    variables = {"params": saved_run.best.params, "batch_stats": saved_run.best.batch_stats}
    program = jax.export.export(
        jax.jit(lambda mel: training.apply(variables, mel)), platforms=served.platforms
    )(export.input_spec(saved_run.config))
    materialized = 0
    if "materialize" in fast_conv.fields("auto", jax.default_backend()):
        # Every BasicBlock's and every fusion's output.
        stages = training.spec.stages
        materialized = sum(s.num_modules * len(s.widths) * (s.num_blocks + 1) for s in stages)
    assert _convolutions_and_channel_matmuls(program) == (
        len(kernels) - pointwise,
        pointwise + materialized,
    )


@pytest.mark.slow
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


@pytest.mark.slow
def test_export_refuses_to_overwrite_or_to_export_nothing(exported, tmp_path):
    with pytest.raises(FileExistsError, match="not empty"):
        export.export_run(str(tmp_path), str(exported))
    with pytest.raises(runs.RunError, match="config"):
        export.export_run(str(tmp_path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    with pytest.raises(ValueError, match="formats"):
        export.export_run(str(tmp_path), str(tmp_path / "out"), formats=["tflite"])


@pytest.fixture
def run_copy(saved_run, tmp_path):
    """`tmp_path/runs/demo`: a copy of the saved run that a test may lose (others share it)."""
    workdir = tmp_path / "runs" / "demo"
    shutil.copytree(saved_run.workdir, workdir)
    return workdir


def _assert_run_intact(workdir):
    assert (workdir / "config.json").is_file()
    assert sorted(os.listdir(workdir / "checkpoints")), "the run's checkpoints are gone"


@pytest.mark.slow
def test_overwrite_refuses_the_run_itself(run_copy):
    """Issue 21 case 3: `--output=<the workdir> --overwrite` used to delete the run."""
    result = _run_cli(f"--workdir={run_copy}", f"--output={run_copy}", "--overwrite")
    assert result.returncode == 1, result.stderr[-3000:]
    (message,) = result.stderr.strip().splitlines()
    assert message == (
        f"export: --overwrite will not replace {run_copy}: it holds the training run {run_copy}"
    )
    _assert_run_intact(run_copy)


def _other_run(root):
    other = root / "experiments" / "old_run"
    (other / "checkpoints" / "4").mkdir(parents=True)
    (other / "config.json").write_text("{}")
    return root


def _ordinary(root):
    (root / "notes.txt").write_text("keep me")
    (root / "metadata.json").write_text(json.dumps({"class_names": ["a"]}))  # not an export's
    return root


@pytest.mark.parametrize(
    "make_output, reason",
    [
        (lambda tmp: tmp / "runs", "holds the training run"),  # the run's parent folder
        (lambda tmp: _other_run(tmp / "other"), "holds the training run"),
        (lambda tmp: _ordinary(tmp / "ordinary"), "replaces only a previous export"),
    ],
    ids=["parent_of_the_run", "holds_another_run", "not_an_export"],
)
def test_overwrite_refuses_what_is_not_an_export(run_copy, tmp_path, make_output, reason):
    (tmp_path / "other").mkdir()
    (tmp_path / "ordinary").mkdir()
    output = make_output(tmp_path)
    before = sorted(str(path) for path in output.rglob("*"))
    with pytest.raises(FileExistsError, match=reason):
        export.export_run(str(run_copy), str(output), ["jax"], ["cpu"], overwrite=True)
    assert sorted(str(path) for path in output.rglob("*")) == before
    _assert_run_intact(run_copy)


@pytest.mark.slow
def test_overwrite_replaces_a_previous_export_even_inside_the_run(exported, run_copy):
    output = run_copy / "export"
    shutil.copytree(exported, output)
    info = export.export_run(str(run_copy), str(output), ["jax"], ["cpu"], overwrite=True)
    assert info["platforms"] == ["cpu"]
    with open(output / export.METADATA_FILE) as file:
        assert json.load(file)["platforms"] == ["cpu"]  # the new export, not the copied one
    assert not (run_copy / "export.partial").exists()
    _assert_run_intact(run_copy)


@pytest.mark.slow
def test_a_staging_folder_is_reused_only_if_an_unfinished_export(saved_run, tmp_path):
    """`<output>.partial` of a killed export is replaced; a user's folder of that name stays."""
    output, staging = tmp_path / "model", tmp_path / "model.partial"
    staging.mkdir()
    (staging / export.JAX_FILE).write_bytes(b"half written")
    export.export_run(saved_run.workdir, str(output), ["jax"], ["cpu"])
    assert not staging.exists() and (output / export.METADATA_FILE).is_file()
    staging.mkdir()
    (staging / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not an unfinished export"):
        export.export_run(saved_run.workdir, str(tmp_path / "model"), ["jax"], ["cpu"], True)
    assert (staging / "thesis.tex").read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--output=s3://bucket/model", "--workdir=s3://bucket/run"])
def test_another_scheme_is_refused_before_anything_is_written(saved_run, tmp_path, flag):
    """gs:// works (tests/test_serving_gcs.py); s3:// and the like are one line, nothing written."""
    defaults = {"--workdir": saved_run.workdir, "--output": tmp_path / "model"}
    defaults.pop(flag.split("=")[0])
    args = [f"{name}={value}" for name, value in defaults.items()]
    result = _run_cli(*args, flag, cwd=tmp_path)
    assert result.returncode == 1
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("export: ") and "s3:// is not supported" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_tilde_is_expanded(saved_run, tmp_path):
    """`--output=~/model` (no shell expansion) writes under $HOME, not into a folder named ~."""
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    os.makedirs(env["HOME"])
    result = _run_cli(
        f"--workdir={saved_run.workdir}",
        "--output=~/model",
        "--formats=jax",
        "--platforms=cpu",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "home" / "model" / export.METADATA_FILE).is_file()
    assert not (tmp_path / "~").exists()
