"""Speed of EmoHRNet-JAX on this machine: train step, inference, input pipeline, preprocessing.

The train step is the real one of training (`steps.jit_steps`: augmentation, forward, backward,
AdamW), timed step by step after warm-up; its FLOPs come from XLA's cost analysis of the lowered
program (and, for MFU, from its convolutions and matmuls alone) and are compared with a matmul
peak in the model's compute dtype, measured in the same run. Inference is the jitted evaluation
step (throughput) and the serving model's figures against their bounds (`benchmark_serving`: one
3 s clip, batched scoring, feature extraction). `tools/benchmark.py` is its command line.

The model parts need only JAX, Flax, optax and ml_collections (the GPU machines have no
TensorFlow): TensorFlow, tfds, librosa and soundfile are imported only by the input-pipeline and
preprocessing parts, which are skipped with a note when those packages are missing.
"""

import os
import platform
import resource
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from emohrnet_jax import benchmark_serving, cost, steps, timing


def machine() -> dict[str, Any]:
    """CPU model, cores, load average, JAX version, backend, devices and XLA flags of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            names = [line.split(":", 1)[1] for line in file if line.startswith("model name")]
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": timing.cores(),
        "load_average_1min": os.getloadavg()[0],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
    }


def peak_device_memory_mib(devices) -> float | None:
    """The largest `peak_bytes_in_use` of `devices` in MiB; None where the backend keeps no
    statistics (the CPU)."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in devices]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) / 2**20 if peaks else None


def _batch(config: ml_collections.ConfigDict, batch_size: int, mesh) -> dict[str, jax.Array]:
    """A random normalized batch with labels and a full mask, split over the mesh's devices."""
    rng = np.random.default_rng(0)
    batch = {
        "mel": rng.standard_normal((batch_size, config.data.n_mels, config.data.num_frames)),
        "label": rng.integers(0, config.model.num_classes, batch_size),
        "mask": np.ones(batch_size, bool),
    }
    batch["mel"] = batch["mel"].astype(np.float32)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return jax.device_put(batch, sharding)


def _time_train_step(
    train,
    state,
    batch: dict[str, jax.Array],
    key: jax.Array,
    num_steps: int,
    warmup: int,
    profile_dir: str | None,
) -> tuple[Any, dict[str, Any], float, float, list[str]]:
    """Compiles and times the train step; (state after the steps, compile and step times,
    FLOPs per step, convolution and matmul FLOPs per step, notes)."""
    train_batch = {"mel": batch["mel"], "label": batch["label"]}
    lowered = train.lower(state, train_batch, key)
    model_flops = cost.matmul_flops(train, state, train_batch, key)
    flops, notes = cost.lowered_flops(lowered), []
    if flops is None:
        flops = model_flops
        notes.append("gflops_per_step: no XLA cost analysis here, convolutions and matmuls")
    started = time.perf_counter()
    train = lowered.compile()
    results = {"compile_s": time.perf_counter() - started}

    def train_once():
        nonlocal state
        state, step_metrics = train(state, train_batch, key)
        return state, step_metrics

    timing.time_calls(train_once, warmup)
    seconds = timing.time_calls(train_once, num_steps)
    results.update(timing.median_min_max(seconds, "train_step"))
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            timing.time_calls(train_once, 3)
    return state, results, flops, model_flops, notes


def _train_step_rates(
    results: dict[str, Any], batch_size: int, flops: float, model_flops: float, matmul_size: int
) -> None:
    """Adds the train step's throughput, GFLOP/s and MFU to `results` (which has its times)."""
    median = results["train_step_median_s"]
    results["examples_per_s"] = batch_size / median
    results["gflops_per_step"] = flops / 1e9
    results["achieved_gflops"] = flops / 1e9 / median
    results["model_gflops_per_step"] = model_flops / 1e9
    # Measured again after the steps and the best kept: the peak is a best case by definition.
    again = timing.matmul_peak_gflops(matmul_size, dtype=results["matmul_dtype"])
    peak = max(results["matmul_peak_gflops"], again)
    results["matmul_peak_gflops"] = peak
    results["fraction_of_matmul_peak"] = results["achieved_gflops"] / peak
    # MFU: the convolutions' and matmuls' FLOPs per second over the matmul peak.
    results["model_flops_utilization"] = model_flops / 1e9 / median / peak


def _time_eval_step(
    evaluate, state, batch: dict[str, jax.Array], num_steps: int, warmup: int
) -> dict[str, Any]:
    """FLOPs, compile time, step times and throughput of the evaluation step."""
    lowered = evaluate.lower(state, batch)
    results = {"eval_gflops_per_step": cost.flops(lowered, evaluate, state, batch) / 1e9}
    started = time.perf_counter()
    evaluate = lowered.compile()
    results["eval_compile_s"] = time.perf_counter() - started
    timing.time_calls(lambda: evaluate(state, batch), warmup)
    eval_seconds = timing.time_calls(lambda: evaluate(state, batch), num_steps)
    results.update(timing.median_min_max(eval_seconds, "eval_step"))
    results["eval_examples_per_s"] = len(batch["label"]) / results["eval_step_median_s"]
    return results


def _peak_memory() -> dict[str, float | None]:
    """Peak host memory of this process and peak device memory, in MiB."""
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "peak_host_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20,
        "peak_device_memory_mib": peak_device_memory_mib(jax.local_devices()),
    }


def benchmark_model(
    config: ml_collections.ConfigDict,
    batch_size: int,
    num_steps: int,
    warmup: int,
    matmul_size: int = 2048,
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """Compile time, step times, throughput, FLOPs and GFLOP/s of the train and evaluation steps.

    Args:
      config: a training config (configs/*.py).
      batch_size: global batch of both steps; must divide over the devices.
      num_steps: timed train steps (evaluation steps likewise), after `warmup` untimed ones.
      warmup: untimed steps after compilation.
      matmul_size: side of the square matrices of the matmul peak.
      profile_dir: when set, a `jax.profiler` trace of 3 more train steps is written there
        (TensorBoard's profile plugin or xprof reads it).
    """
    mesh = steps.make_mesh()
    if batch_size % mesh.size:
        raise ValueError(f"batch size {batch_size} does not divide over {mesh.size} devices")
    # The peak in the model's compute dtype: bfloat16 runs on other units than float32 on GPU/TPU.
    dtype = config.model.dtype
    results: dict[str, Any] = {
        "matmul_peak_gflops": timing.matmul_peak_gflops(matmul_size, dtype=dtype),
        "matmul_dtype": dtype,
    }
    started = time.perf_counter()
    state = jax.block_until_ready(steps.create_train_state(config, steps_per_epoch=1000))
    results["init_s"] = time.perf_counter() - started
    train, evaluate = steps.jit_steps(config, mesh, config.model.num_classes, 1000)
    batch = _batch(config, batch_size, mesh)
    key = jax.random.key(config.seed)
    state, train_results, flops, model_flops, notes = _time_train_step(
        train, state, batch, key, num_steps, warmup, profile_dir
    )
    results.update(train_results)
    _train_step_rates(results, batch_size, flops, model_flops, matmul_size)
    results.update(_time_eval_step(evaluate, state, batch, num_steps, warmup))
    inference = benchmark_serving.benchmark_inference(
        config, state, num_steps, results["matmul_peak_gflops"]
    )
    results["notes"] = notes + inference.pop("notes", [])
    results.update(inference)
    results.update(_peak_memory())
    return results


def benchmark_input_pipeline(
    config: ml_collections.ConfigDict, batch_size: int, num_batches: int
) -> dict[str, Any]:
    """Examples/s from the prepared TFRecords to device arrays (crop, normalize, batch, copy).

    Returns `{"notes": [...]}` alone when TensorFlow/tfds are missing or the dataset of
    `config.data` is not prepared (the benchmark never prepares data).
    """
    try:
        from emohrnet_jax.data import loading, pipeline
    except ImportError as error:
        return {"notes": [f"input pipeline skipped: {error}"]}
    try:
        loading.load_builder(config.data, prepare_synthetic=False)
    except FileNotFoundError as error:
        return {"notes": [f"input pipeline skipped: {error}"]}
    fold = pipeline.create_fold_input(config)
    mesh = steps.make_mesh()
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    count, started = 0, None
    for batch in fold.train_batches(batch_size, config.seed, epoch=0):
        jax.block_until_ready(jax.device_put({k: batch[k] for k in ("mel", "label")}, sharding))
        if started is None:  # The first batch fills tf.data's buffers (shuffle, prefetch).
            started = time.perf_counter()
            continue
        count += 1
        if count == num_batches:
            break
    if not count:
        return {"notes": ["input pipeline skipped: the training split has fewer than 2 batches"]}
    return {"input_examples_per_s": count * batch_size / (time.perf_counter() - started)}


def run(
    config: ml_collections.ConfigDict,
    batch_size: int,
    num_steps: int,
    warmup: int,
    input_pipeline: bool = True,
    preprocessing: bool = True,
    preprocessing_clips: int = 32,
    matmul_size: int = 2048,
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """Every benchmark of this tool for one config and batch size, as one flat dict."""
    results: dict[str, Any] = {
        "machine": machine(),
        "variant": config.model.variant,
        "input_shape": [batch_size, config.data.n_mels, config.data.num_frames],
        "dtype": config.model.dtype,
        "batch_size": batch_size,
        "steps": num_steps,
        "notes": [],
    }
    parts = [benchmark_model(config, batch_size, num_steps, warmup, matmul_size, profile_dir)]
    if input_pipeline:
        parts.append(benchmark_input_pipeline(config, batch_size, max(num_steps, 10)))
    if preprocessing:
        parts.append(benchmark_serving.benchmark_preprocessing(config, preprocessing_clips))
    for part in parts:
        results["notes"] += part.pop("notes", [])
        results.update(part)
    results["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    return results
