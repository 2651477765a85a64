"""Wall-clock timing of jitted calls and the matmul peak the benchmarks compare against."""

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def time_calls(call: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls, each waited for (`block_until_ready`)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(call())
        seconds.append(time.perf_counter() - started)
    return seconds


def median_min_max(seconds: list[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_median_s": statistics.median(seconds),
        f"{prefix}_min_s": min(seconds),
        f"{prefix}_max_s": max(seconds),
    }


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Best `jnp.dot` GFLOP/s of two `size` x `size` matrices of `dtype` (2 n^3 FLOPs)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, a))
    return 2 * size**3 / min(time_calls(lambda: dot(a, a), repeats)) / 1e9
