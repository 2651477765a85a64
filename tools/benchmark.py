"""Speed of EmoHRNet-JAX on this machine: train step, inference, input pipeline, preprocessing.

  python tools/benchmark.py --config=configs/ravdess.py --batch_size=8 --json=ravdess_b8.json
  python tools/benchmark.py --config=configs/default.py --config.model.variant=w18_small_v2 \\
      --batch_size=8 --noinput_pipeline --nopreprocessing

Prints the train step's times, FLOPs and MFU, the evaluation throughput, one 3 s clip's real-time
factor and ratio to its FLOP bound, batched scoring's fraction of the matmul peak, the input
pipeline's and preprocessing's throughput (what is timed, and how: emohrnet_jax.benchmark and
emohrnet_jax.benchmark_serving); `--json` writes the same figures. The input-pipeline and
preprocessing parts are skipped with a note where TensorFlow or librosa are missing (the GPU
machines).
"""

import sys
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import allocator, benchmark, benchmark_serving, cli, storage

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train (and evaluation) steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
_INPUT_PIPELINE = flags.DEFINE_bool(
    "input_pipeline", True, "Time the input pipeline (needs TensorFlow and prepared data)."
)
_PREPROCESSING = flags.DEFINE_bool(
    "preprocessing", True, "Time feature extraction (needs librosa and soundfile)."
)
_PREPROCESSING_CLIPS = flags.DEFINE_integer(
    "preprocessing_clips", 32, "Synthetic clips for the preprocessing throughput."
)
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "Matrix side of the matmul peak.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", None, "Write a jax.profiler trace of 3 train steps to this folder."
)
_MALLOC_TUNABLES = cli.define_malloc_tunables_flag()
flags.mark_flags_as_required(["config"])


def _print(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, {m['backend']} {m['devices'][0]} x{len(m['devices'])}")
    print(f"load average (1 min): {m['load_average_1min']:.2f} -> {m['load_average_1min_end']:.2f}")
    print(f"HRNet {results['variant']} {results['dtype']}, input {results['input_shape']}")
    print(f"compile: train step {results['compile_s']:.1f} s, eval {results['eval_compile_s']:.1f}")
    print(
        f"train step: median {results['train_step_median_s'] * 1e3:.1f} ms "
        f"(min {results['train_step_min_s'] * 1e3:.1f}, "
        f"max {results['train_step_max_s'] * 1e3:.1f}), {results['examples_per_s']:.1f} examples/s"
    )
    print(
        f"FLOPs per step {results['gflops_per_step']:.2f} G: {results['achieved_gflops']:.1f} "
        f"GFLOP/s = {results['fraction_of_matmul_peak']:.0%} of the matmul peak "
        f"{results['matmul_peak_gflops']:.1f} GFLOP/s ({results['matmul_dtype']})"
    )
    print(
        f"convolutions and matmuls {results['model_gflops_per_step']:.2f} GFLOP per step: "
        f"{results['model_flops_utilization']:.0%} of the matmul peak (MFU)"
    )
    print(f"evaluation: {results['eval_examples_per_s']:.1f} examples/s")
    what = "features + model" if results["inference_rtf_includes_features"] else "model only"
    bound = results["inference_flop_bound_s"]
    print(
        f"one {benchmark_serving.CLIP_SECONDS:g} s clip ({what}): "
        f"{results['inference_clip_s'] * 1e3:.1f} ms, real-time factor "
        f"{results['inference_rtf']:.4f}, {results['inference_clip_bound_ratio']:.2f}x its FLOP "
        f"bound {bound * 1e3:.1f} ms; the model alone {results['inference_model_clip_s'] * 1e3:.1f}"
        f" ms, {results['inference_model_bound_ratio']:.2f}x"
    )
    print(
        f"scoring windows {results['predict_folder_batch']} at a time (predict's folder batch): "
        f"{results['predict_folder_windows_per_s']:.1f} windows/s, "
        f"{results['predict_folder_peak_fraction']:.0%} of the matmul peak"
    )
    if "input_examples_per_s" in results:
        print(f"input pipeline: {results['input_examples_per_s']:.0f} examples/s")
    if "preprocessing_clips_per_s_1_core" in results:
        print(
            f"preprocessing: {results['preprocessing_clips_per_s_1_core']:.1f} clips/s in this "
            f"process on 1 thread, {results['preprocessing_clips_per_s_1_worker']:.1f} with 1 "
            f"worker, {results['preprocessing_clips_per_s_all_cores']:.1f} with "
            f"{results['preprocessing_workers']} ({results['preprocessing_scaling']:.2f}x)"
        )
    print(f"peak host memory: {results['peak_host_memory_mib']:.0f} MiB")
    if results["peak_device_memory_mib"] is not None:
        print(f"peak device memory: {results['peak_device_memory_mib']:.0f} MiB")
    for note in results["notes"]:
        print(f"note: {note}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _MALLOC_TUNABLES.value:  # As training has them.
        allocator.restart_with_tunables()
    results = benchmark.run(
        _CONFIG.value,
        _BATCH_SIZE.value or _CONFIG.value.batch_size,
        _STEPS.value,
        _WARMUP.value,
        _INPUT_PIPELINE.value,
        _PREPROCESSING.value,
        _PREPROCESSING_CLIPS.value,
        _MATMUL_SIZE.value,
        _PROFILE_DIR.value,
    )
    results["command"] = " ".join(sys.argv)
    _print(results)
    if _JSON.value:
        storage.write_json_atomically(_JSON.value, results)


if __name__ == "__main__":
    app.run(main)
