"""Tests of tools/benchmark.py (emohrnet_jax.benchmark): the JSON contract, FLOPs, and running
without TensorFlow."""

import json
import math
import os
import subprocess
import sys

import pytest

from emohrnet_jax import benchmark, benchmark_serving, model_summary
from tests import helpers

REPO = helpers.CONFIGS.parent
CONTRACT = (
    "train_step_median_s",
    "compile_s",
    "gflops_per_step",
    "matmul_peak_gflops",
    "examples_per_s",
    "inference_rtf",
    "inference_flop_bound_s",
    "predict_folder_peak_fraction",
)

# Runs the tool as a script while tensorflow, tfds, librosa and soundfile cannot be imported, as on
# the GPU machines; prints the heavy modules that were loaded anyway.
_WITHOUT_TENSORFLOW = """
import importlib.machinery, runpy, sys

BLOCKED = {"tensorflow", "tensorflow_datasets", "librosa", "soundfile"}
find_on_path = importlib.machinery.PathFinder.find_spec

def find_spec(name, path=None, target=None):
    # Not found, as when not installed (importlib.util.find_spec answers None, too).
    if name.split(".")[0] in BLOCKED:
        return None
    return find_on_path(name, path, target)

importlib.machinery.PathFinder.find_spec = staticmethod(find_spec)
sys.argv = ["tools/benchmark.py"] + sys.argv[1:]
try:
    runpy.run_path("tools/benchmark.py", run_name="__main__")
finally:
    print("LOADED", sorted(m for m in BLOCKED | {"tensorflow.python"} if m in sys.modules))
"""


def _tiny_flags(tmp_path) -> list[str]:
    # helpers.tiny_config's model, shapes and batch: test_train compiles the same train step, so
    # the session's persistent compilation cache serves whichever test runs second.
    config = helpers.tiny_config(tmp_path)
    return [
        f"--config={helpers.CONFIGS / 'demo.py'}",
        f"--config.data.data_dir={tmp_path}",
        f"--config.data.n_mels={config.data.n_mels}",
        f"--config.data.n_fft={config.data.n_fft}",
        f"--config.data.num_frames={config.data.num_frames}",
        f"--config.model.variant={config.model.variant}",
        f"--config.augment.freq_mask_width={config.augment.freq_mask_width}",
        f"--config.augment.time_mask_width={config.augment.time_mask_width}",
        f"--config.lr_schedule={config.lr_schedule}",
        f"--config.warmup_epochs={config.warmup_epochs}",
        f"--batch_size={config.batch_size}",
        "--steps=2",
        "--warmup=1",
        "--matmul_size=256",
    ]


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory):
    """The tool's JSON and printout, run with every part on but the TF/librosa stack blocked."""
    tmp_path = tmp_path_factory.mktemp("benchmark")
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, *_tiny_flags(tmp_path), f"--json={out}"],
        cwd=REPO,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


@pytest.mark.slow
def test_json_has_the_contract_keys_with_sane_values(without_tensorflow):
    results, _ = without_tensorflow
    for key in CONTRACT:
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert results["examples_per_s"] == pytest.approx(8 / results["train_step_median_s"])
    assert results["train_step_min_s"] <= results["train_step_median_s"]
    assert results["train_step_median_s"] <= results["train_step_max_s"]
    assert 0 < results["fraction_of_matmul_peak"] < 2
    assert results["peak_host_memory_mib"] > 100
    assert results["peak_device_memory_mib"] is None  # the CPU keeps no allocator statistics
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu"]
    assert results["input_shape"] == [8, 32, 32]
    # The bound is a lower bound: no run beats the matmul peak.
    assert results["inference_model_clip_s"] >= results["inference_flop_bound_s"]
    assert results["inference_model_bound_ratio"] == pytest.approx(
        results["inference_model_clip_s"] / results["inference_flop_bound_s"]
    )
    assert results["inference_clip_bound_ratio"] >= 1
    assert 0 < results["predict_folder_peak_fraction"] <= 1


def test_peak_device_memory_is_the_largest_device_peak():
    class Device:
        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    gpus = [Device({"peak_bytes_in_use": 3 * 2**20}), Device({"peak_bytes_in_use": 5 * 2**20})]
    assert benchmark.peak_device_memory_mib(gpus) == 5
    assert benchmark.peak_device_memory_mib([Device(None), Device({})]) is None


@pytest.mark.slow
def test_the_model_parts_run_without_tensorflow_or_librosa(without_tensorflow):
    results, stdout = without_tensorflow
    assert "LOADED []" in stdout
    assert results["inference_rtf_includes_features"] is False
    notes = " ".join(results["notes"])
    assert "input pipeline skipped" in notes and "preprocessing skipped" in notes
    assert "note: input pipeline skipped" in stdout


@pytest.mark.slow
def test_train_step_flops_are_about_three_forward_passes(without_tensorflow, tmp_path):
    results, _ = without_tensorflow
    summary = model_summary.summarize(helpers.tiny_config(tmp_path), batch_size=1, flops=True)
    forward = 8 * summary["flops_per_example"] / 1e9
    # Backward is about twice the forward; AdamW adds ~20 FLOPs per parameter (much for `tiny`).
    assert 2.5 * forward < results["gflops_per_step"] < 5.5 * forward
    assert results["eval_gflops_per_step"] == pytest.approx(forward, rel=0.05)


@pytest.mark.slow
def test_preprocessing_and_missing_data_with_the_full_stack(tmp_path):
    config = helpers.tiny_config(tmp_path)
    results = benchmark_serving.benchmark_preprocessing(config, num_clips=4)
    for key in ("1_core", "1_worker", "all_cores"):
        assert results[f"preprocessing_clips_per_s_{key}"] > 0
    assert results["preprocessing_workers"] >= 1
    rates = [results[f"preprocessing_clips_per_s_{k}"] for k in ("all_cores", "1_worker")]
    assert results["preprocessing_scaling"] == pytest.approx(rates[0] / rates[1])
    (note,) = benchmark.benchmark_input_pipeline(config, 8, 2)["notes"]
    assert "not prepared" in note and "prepare_data.py" in note
