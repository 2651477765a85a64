"""Tests of tools/pytorch_reference.py (emohrnet_jax.pytorch_reference, torch_hrnet); those that
run PyTorch only where it is installed (it is no dependency).

PyTorch runs in a subprocess: loaded into the test process beside TensorFlow, it crashed later
tests.
"""

import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from emohrnet_jax import pytorch_reference
from tests import helpers

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch is not installed"
)

# Prints check_same_model's answer for the PyTorch model of sys.argv[1] against the JAX train state
# of each variant in sys.argv[2:] (shapes only: no compile), or the error it raised.
_CHECK = """
import json, sys
import jax, numpy as np
from emohrnet_jax import models, steps, torch_hrnet
from tests import helpers

config = helpers.tiny_config("unused")
model = torch_hrnet.TorchHRNet(
    models.VARIANTS[sys.argv[1]], config.model.num_classes, config.model.stem_strides
)
mel = np.zeros((2, config.data.n_mels, config.data.num_frames), np.float32)
answers = {}
for variant in sys.argv[2:]:
    config.model.variant = variant
    state = jax.eval_shape(lambda: steps.create_train_state(config, steps_per_epoch=1))
    try:
        answers[variant] = torch_hrnet.check_same_model(model, config, state, mel)
    except RuntimeError as error:
        answers[variant] = str(error)
print(json.dumps(answers))
"""


def test_the_jobs_are_pytorch_jax_and_jax_with_each_im2col(tmp_path):
    config = helpers.tiny_config(tmp_path)
    jobs = pytorch_reference._jobs(config, ("off", "on"))
    assert [name for name, _, _ in jobs] == ["torch", "jax", "jax_im2col_off", "jax_im2col_on"]
    assert [job_config.model.im2col for _, _, job_config in jobs[2:]] == ["off", "on"]
    assert jobs[0][2] is jobs[1][2] is config and config.model.im2col not in ("off", "on")


def test_a_process_that_died_is_named_in_a_clear_error():
    parent, child = multiprocessing.Pipe()
    child.send(ValueError("raised in the child"))
    with pytest.raises(ValueError, match="raised in the child"):
        pytorch_reference._receive(parent, "torch")
    child.close()  # As when the kernel's OOM killer ends it.
    with pytest.raises(RuntimeError, match="the jax process ended without a reply"):
        pytorch_reference._receive(parent, "jax")


@needs_torch
@pytest.mark.parametrize(("variant", "other"), [("tiny", "small"), ("w18_small_v2", "w18")])
def test_the_pytorch_model_has_our_parameters_and_flops(variant, other):
    result = subprocess.run(
        [sys.executable, "-c", _CHECK, variant, variant, other],
        cwd=helpers.CONFIGS.parent,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.splitlines()[-1])
    same = answers[variant]
    assert same["torch_forward_gflops"] == pytest.approx(same["forward_gflops"], rel=0.1)
    assert same["parameters"] > 0
    assert "differs" in answers[other]


@needs_torch
def test_the_tool_times_other_jax_settings_in_the_same_turns(tmp_path):
    out = tmp_path / "compare.json"
    tiny = [
        "--config.model.variant=tiny",
        "--config.data.n_mels=32",
        "--config.data.num_frames=32",
        "--config.augment.freq_mask_width=4",
        "--config.augment.time_mask_width=4",
    ]
    command = [sys.executable, "tools/pytorch_reference.py", "--config=configs/demo.py", *tiny]
    command += ["--batch_size=2", "--rounds=2", "--per_round=1", "--jax_im2col=off"]
    result = subprocess.run(
        [*command, f"--json={out}"],
        cwd=helpers.CONFIGS.parent,
        # One CPU device, so that a batch of 2 needs no sharding.
        env={**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    torch_s = results["torch_step_median_s"]
    assert len(results["jax_im2col_off_steps_s"]) == 2
    assert results["jax_im2col_off_over_torch"] == pytest.approx(
        results["jax_im2col_off_step_median_s"] / torch_s
    )
    assert results["jax_im2col_off_compile_s"] > 0
    assert "JAX with config.model.im2col=off" in result.stdout
    assert len(results["jax_steps_s"]) == len(results["torch_steps_s"]) == 2
