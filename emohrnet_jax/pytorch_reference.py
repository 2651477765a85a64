"""Times the train step of our HRNet in JAX and of the same HRNet in PyTorch, in turns.

The PyTorch model is `emohrnet_jax.torch_hrnet`'s twin of the JAX model; the PyTorch process
refuses to run when the two disagree in parameter count or by more than 10% in the FLOPs of their
convolutions and matmuls. PyTorch runs channels-last with AdamW, in float32 or, when
`config.model.dtype` is bfloat16, under bfloat16 autocast (on CUDA with `cudnn.benchmark`, its
counterpart of XLA's autotuning); JAX runs `steps.jit_steps`' train step (which also augments the
batch on device). Each runs in its own process (their thread pools would compete in one) and the
two take turns, a few steps each, so load from other processes slows both alike; the ratio of the
medians is the figure to read (docs/performance.md). PyTorch is imported only in its own process,
so this module imports without it. `tools/pytorch_reference.py` is its command line.
"""

import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from emohrnet_jax import models, steps


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _batch(config: ml_collections.ConfigDict, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((batch_size, config.data.n_mels, config.data.num_frames), np.float32)
    return mel, rng.integers(0, config.model.num_classes, batch_size)


def _jax_runner(config: ml_collections.ConfigDict, batch_size: int, device: str):
    """The JAX train step on a fixed batch on the default backend, compiled; (step, details)."""
    del device  # JAX runs on its default backend; `compare` checks that it is the asked one.
    mel, label = _batch(config, batch_size)
    mesh = steps.make_mesh()
    # Replicated as in training, so the step's outputs have its inputs' sharding (one compile).
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.device_put(steps.create_train_state(config, steps_per_epoch=1000), replicated)
    train, _ = steps.jit_steps(config, mesh, config.model.num_classes, 1000)
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch = jax.device_put({"mel": mel, "label": label.astype(np.int32)}, batch_sharding)
    key = jax.random.key(config.seed)

    def step():
        nonlocal state
        state, _ = jax.block_until_ready(train(state, batch, key))

    details = {"jax": jax.__version__, "jax_backend": jax.default_backend()}
    return step, {**details, "jax_compile_s": _timed(step)}


def _torch_runner(config: ml_collections.ConfigDict, batch_size: int, device: str):
    """The PyTorch train step on the same batch, after checking the model; (step, details)."""
    import torch  # Only here: PyTorch is no dependency, and only this process needs it.

    from emohrnet_jax import torch_hrnet

    # JAX only traces in this process: kept off the accelerator that PyTorch uses.
    jax.config.update("jax_platforms", "cpu")
    device = torch.device(device)
    torch.backends.cudnn.benchmark = True
    mel, label = _batch(config, batch_size)
    torch.manual_seed(config.seed)
    spec = models.VARIANTS[config.model.variant]
    model = torch_hrnet.TorchHRNet(spec, config.model.num_classes, config.model.stem_strides)
    state = jax.eval_shape(lambda: steps.create_train_state(config, steps_per_epoch=1))
    details = torch_hrnet.check_same_model(model, config, state, mel)
    model = model.to(device, memory_format=torch.channels_last)
    train = torch_hrnet.train_step(model, config, device)
    mel, label = torch.from_numpy(mel).to(device), torch.from_numpy(label).to(device)

    def step():
        train(mel, label)  # Its `loss.item()` waits for the device.

    step()  # The first step allocates and picks kernels.
    details.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    if device.type == "cuda":
        details["torch_device"] = torch.cuda.get_device_name(device)
    return step, details


def _serve(runner, config_dict: dict, batch_size: int, device: str, connection) -> None:
    """A child process: builds one framework's step, then times `n` steps per request."""
    try:
        step, details = runner(ml_collections.ConfigDict(config_dict), batch_size, device)
        connection.send(details)
        while count := connection.recv():
            connection.send([_timed(step) for _ in range(count)])
    except Exception as error:  # Reported by the parent: a child's traceback is easy to miss.
        connection.send(error)


def _receive(connection, name: str) -> Any:
    try:
        message = connection.recv()
    except EOFError:  # The child died: killed, or out of memory with the other one's.
        raise RuntimeError(
            f"the {name} process ended without a reply: killed, or out of memory (JAX's "
            "process keeps its step's memory between turns)"
        ) from None
    if isinstance(message, Exception):
        raise message
    return message


@contextlib.contextmanager
def _unset(name: str):
    """Environment variable `name` unset for the processes started inside."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def _jobs(config: ml_collections.ConfigDict, jax_im2col: tuple[str, ...]) -> list[tuple]:
    """(name, runner, config) of each process: PyTorch, JAX, and JAX with each `im2col`."""
    jobs = [("torch", _torch_runner, config), ("jax", _jax_runner, config)]
    for im2col in jax_im2col:
        other = config.copy_and_resolve_references()
        other.model.im2col = im2col
        jobs.append((f"jax_im2col_{im2col}", _jax_runner, other))
    return jobs


def _start(
    jobs: list[tuple], batch_size: int, device: str, torch_tunables: bool
) -> tuple[dict[str, tuple], dict[str, Any]]:
    """Starts one process per job, one after the other; (workers by name, their details)."""
    context = multiprocessing.get_context("spawn")
    workers, results = {}, {}
    tunables = os.environ.get("GLIBC_TUNABLES")
    for name, runner, job_config in jobs:
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(runner, job_config.to_dict(), batch_size, device, child),
            daemon=True,
        )
        hide = name == "torch" and not torch_tunables
        with _unset("GLIBC_TUNABLES") if hide else contextlib.nullcontext():
            process.start()
        results[f"{name}_glibc_tunables"] = None if hide else tunables
        workers[name] = (process, parent)
        # One at a time: compiling beside a run would slow it.
        details = _receive(parent, name)
        if name not in ("torch", "jax"):
            details = {f"{name}_compile_s": details["jax_compile_s"]}
        results.update(details)
    return workers, results


def _take_turns(workers: dict[str, tuple], rounds: int, per_round: int) -> dict[str, list]:
    """Step seconds of each worker, `per_round` steps each in `rounds` turns; then stops them."""
    seconds = {name: [] for name in workers}
    for _ in range(rounds):
        for name, (_, connection) in workers.items():
            connection.send(per_round)
            seconds[name] += _receive(connection, name)
    for process, connection in workers.values():
        connection.send(0)
        process.join()
    return seconds


def compare(
    config: ml_collections.ConfigDict,
    batch_size: int,
    rounds: int,
    per_round: int,
    torch_tunables: bool = False,
    device: str = "cpu",
    jax_im2col: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Median train-step seconds of JAX and PyTorch, each in its own process, in turns.

    Separate processes keep each framework's thread pool from competing with the other's; the
    turns (`rounds` of `per_round` steps each) make load from other processes slow both alike.
    JAX's process gets this process's GLIBC_TUNABLES (`allocator.TUNABLES` when run as a script);
    PyTorch's gets the same with `torch_tunables`, else none. `device` is PyTorch's ("cpu" or
    "cuda"); JAX uses its default backend, which must be of the same kind. Each value of
    `jax_im2col` adds a JAX process with that `config.model.im2col` to the turns (results under
    `jax_im2col_<value>_...`), to compare JAX's ways of computing convolutions in the same run.
    """
    workers, results = _start(_jobs(config, jax_im2col), batch_size, device, torch_tunables)
    if results["jax_backend"] != {"cuda": "gpu"}.get(device, device):
        raise RuntimeError(f"JAX runs on {results['jax_backend']}, PyTorch on {device}")
    seconds = _take_turns(workers, rounds, per_round)
    jax_s, torch_s = statistics.median(seconds["jax"]), statistics.median(seconds["torch"])
    for name in (f"jax_im2col_{im2col}" for im2col in jax_im2col):
        results[f"{name}_step_median_s"] = statistics.median(seconds[name])
        results[f"{name}_over_torch"] = results[f"{name}_step_median_s"] / torch_s
        results[f"{name}_steps_s"] = seconds[name]
    return {
        **results,
        "variant": config.model.variant,
        "input_shape": [batch_size, config.data.n_mels, config.data.num_frames],
        "dtype": config.model.dtype,
        "device": device,
        "jax_step_median_s": jax_s,
        "torch_step_median_s": torch_s,
        "jax_over_torch": jax_s / torch_s,
        "jax_steps_s": seconds["jax"],
        "torch_steps_s": seconds["torch"],
    }
