"""Times the train step of our HRNet in JAX and of the same HRNet in PyTorch, in turns.

  pip install torch  # not a dependency of EmoHRNet-JAX; only this tool uses it
  python tools/pytorch_reference.py --config=configs/default.py \\
      --config.model.variant=w18_small_v2 --batch_size=8 [--jax_im2col=off]
  python tools/pytorch_reference.py --config=configs/ravdess.py --batch_size=64 \\
      --config.model.dtype=bfloat16 --device=cuda  # one GPU: JAX's default backend there

The PyTorch model is built from the same `VARIANTS` spec as `emohrnet_jax.models.hrnet` (stem,
Bottleneck stage 1, HighResolutionModules with multi-resolution fusion, HRNetV2 fuse layer,
pooling, dense head); the tool refuses to run when the two disagree in parameter count or by more
than 10% in the FLOPs of their convolutions and matmuls. PyTorch runs channels-last with AdamW,
in float32 or, when `config.model.dtype` is bfloat16, under bfloat16 autocast (on CUDA with
`cudnn.benchmark`, its counterpart of XLA's autotuning); JAX runs `steps.jit_steps`' train step
(which also augments the batch on device). Each runs in its own process (their thread pools would
compete in one) and the two take turns, a few steps each, so load from other processes slows both
alike; the ratio of the medians is the figure to read (docs/performance.md). JAX's process gets our
glibc malloc settings (`emohrnet_jax.allocator`, `--malloc_tunables`), as in training;
PyTorch's gets glibc's defaults, as its users have, unless `--torch_tunables`.
"""

import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from absl import app, flags
from ml_collections import config_flags
from torch import nn
from torch.utils import flop_counter

from emohrnet_jax import allocator, cli, cost, files, models, steps
from emohrnet_jax.models import hrnet

# The JAX model's BatchNorm: PyTorch momentum 0.1 is flax's 0.9.
_BN = {"eps": hrnet.BN_EPSILON, "momentum": 1 - hrnet.BN_MOMENTUM}


def _conv3x3(cin: int, cout: int, stride: tuple[int, int] = (1, 1)) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv_bn(cin: int, cout: int, stride: tuple[int, int], relu: bool) -> nn.Sequential:
    layers = [_conv3x3(cin, cout, stride), nn.BatchNorm2d(cout, **_BN)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


def _projection(cin: int, cout: int) -> nn.Module:
    if cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, **_BN))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, (1, 1), True), _conv_bn(cout, cout, (1, 1), False)
        )
        self.residual = _projection(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.residual(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, expansion: int = 4):
        super().__init__()
        cout = planes * expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False),
            nn.BatchNorm2d(planes, **_BN),
            nn.ReLU(),
            _conv_bn(planes, planes, (1, 1), True),
            nn.Conv2d(planes, cout, 1, bias=False),
            nn.BatchNorm2d(cout, **_BN),
        )
        self.residual = _projection(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.residual(x))


class Transition(nn.Module):
    def __init__(self, in_widths: tuple[int, ...], widths: tuple[int, ...]):
        super().__init__()
        self.num_inputs = len(in_widths)
        branches = []
        for i, width in enumerate(widths):
            if i < len(in_widths):
                same = in_widths[i] == width
                branches.append(
                    nn.Identity() if same else _conv_bn(in_widths[i], width, (1, 1), True)
                )
            else:
                downs, cin = [], in_widths[-1]
                for _ in range(i - len(in_widths) + 1):
                    downs.append(_conv_bn(cin, width, (2, 2), True))
                    cin = width
                branches.append(nn.Sequential(*downs))
        self.branches = nn.ModuleList(branches)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [b(xs[min(i, self.num_inputs - 1)]) for i, b in enumerate(self.branches)]


class HighResolutionModule(nn.Module):
    def __init__(self, widths: tuple[int, ...], num_blocks: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(w, w) for _ in range(num_blocks))) for w in widths
        )
        self.fuse = nn.ModuleList()
        for i in range(len(widths)):
            row = nn.ModuleList()
            for j in range(len(widths)):
                if j > i:
                    row.append(_projection(widths[j], widths[i]))
                elif j < i:
                    downs = [
                        _conv_bn(
                            widths[j],
                            widths[i] if k == i - j - 1 else widths[j],
                            (2, 2),
                            k < i - j - 1,
                        )
                        for k in range(i - j)
                    ]
                    row.append(nn.Sequential(*downs))
                else:
                    row.append(nn.Identity())
            self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        outs = []
        for i, row in enumerate(self.fuse):
            total = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                if j > i:  # Nearest with half-pixel centres, as jax.image.resize.
                    y = F.interpolate(y, size=xs[i].shape[2:], mode="nearest-exact")
                total = total + y
            outs.append(F.relu(total))
        return outs


class TorchHRNet(nn.Module):
    """`emohrnet_jax.models.hrnet.HRNet` in PyTorch (NCHW tensors; channels-last memory)."""

    def __init__(self, spec: hrnet.HRNetSpec, num_classes: int, stem_strides):
        super().__init__()
        stem, cin = [], 1
        for strides in stem_strides:
            stem.append(_conv_bn(cin, spec.stem_width, tuple(strides), True))
            cin = spec.stem_width
        self.stem = nn.Sequential(*stem)
        blocks = []
        for _ in range(spec.stage1_blocks):
            blocks.append(Bottleneck(cin, spec.stage1_planes))
            cin = spec.stage1_planes * 4
        self.stage1 = nn.Sequential(*blocks)
        stages, in_widths = [], (cin,)
        for stage in spec.stages:
            modules = [Transition(in_widths, stage.widths)]
            modules += [
                HighResolutionModule(stage.widths, stage.num_blocks)
                for _ in range(stage.num_modules)
            ]
            stages.append(nn.ModuleList(modules))
            in_widths = stage.widths
        self.stages = nn.ModuleList(stages)
        total = sum(in_widths)
        self.fuse = nn.Sequential(
            nn.Conv2d(total, total, 1, bias=False), nn.BatchNorm2d(total, **_BN), nn.ReLU()
        )
        self.classifier = nn.Linear(total, num_classes)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        xs = [self.stage1(self.stem(mel[:, None]))]
        for stage in self.stages:
            for module in stage:
                xs = module(xs)
        size = xs[0].shape[2:]
        up = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in xs[1:]]
        x = self.fuse(torch.cat([xs[0], *up], dim=1))
        return self.classifier(x.mean(dim=(2, 3)))


def _torch_train_step(
    model: nn.Module, config: ml_collections.ConfigDict, device: torch.device
) -> Callable[..., Any]:
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=(config.b1, config.b2),
        weight_decay=config.weight_decay,
    )
    bfloat16 = config.model.dtype == "bfloat16"

    def step(mel: torch.Tensor, label: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=bfloat16):
            loss = F.cross_entropy(model(mel), label)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def check_same_model(model: nn.Module, config: ml_collections.ConfigDict, state, mel) -> dict:
    """Parameter counts and forward FLOPs of both models; raises when they disagree."""
    jax_params = sum(p.size for p in jax.tree.leaves(state.params))
    torch_params = sum(p.numel() for p in model.parameters())
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    apply = models.create_model(config).apply
    jax_flops = cost.matmul_flops(lambda v, x: apply(v, x), variables, jnp.asarray(mel))
    with flop_counter.FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.from_numpy(mel))
    model.train()
    torch_flops = counter.get_total_flops()
    # Matmuls only the JAX model has: jax.image.resize's bilinear upsampling, and on CPU the
    # identity products of `fast_conv.materialize`.
    if jax_params != torch_params or abs(jax_flops - torch_flops) > 0.1 * jax_flops:
        raise RuntimeError(
            f"the PyTorch model differs from {config.model.variant}: parameters {torch_params} vs "
            f"{jax_params}, forward GFLOP {torch_flops / 1e9:.3f} vs {jax_flops / 1e9:.3f}"
        )
    return {
        "parameters": jax_params,
        "forward_gflops": jax_flops / 1e9,
        "torch_forward_gflops": torch_flops / 1e9,
    }


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
    # JAX only traces in this process: kept off the accelerator that PyTorch uses.
    jax.config.update("jax_platforms", "cpu")
    device = torch.device(device)
    torch.backends.cudnn.benchmark = True
    mel, label = _batch(config, batch_size)
    torch.manual_seed(config.seed)
    spec = models.VARIANTS[config.model.variant]
    model = TorchHRNet(spec, config.model.num_classes, config.model.stem_strides)
    state = jax.eval_shape(lambda: steps.create_train_state(config, steps_per_epoch=1))
    details = check_same_model(model, config, state, mel)
    model = model.to(device, memory_format=torch.channels_last)
    train = _torch_train_step(model, config, device)
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


@contextlib.contextmanager
def _unset(name: str):
    """Environment variable `name` unset for the processes started inside."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


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
    context = multiprocessing.get_context("spawn")
    workers, results = {}, {}
    tunables = os.environ.get("GLIBC_TUNABLES")
    jobs = [("torch", _torch_runner, config), ("jax", _jax_runner, config)]
    others = [f"jax_im2col_{im2col}" for im2col in jax_im2col]
    for name, im2col in zip(others, jax_im2col, strict=True):
        other = config.copy_and_resolve_references()
        other.model.im2col = im2col
        jobs.append((name, _jax_runner, other))
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
        details = _receive(parent)
        if name in others:
            details = {f"{name}_compile_s": details["jax_compile_s"]}
        results.update(details)
    if results["jax_backend"] != {"cuda": "gpu"}.get(device, device):
        raise RuntimeError(f"JAX runs on {results['jax_backend']}, PyTorch on {device}")
    seconds = {name: [] for name in workers}
    for _ in range(rounds):
        for name, (_, connection) in workers.items():
            connection.send(per_round)
            seconds[name] += _receive(connection)
    for process, connection in workers.values():
        connection.send(0)
        process.join()
    jax_s, torch_s = statistics.median(seconds["jax"]), statistics.median(seconds["torch"])
    for name in others:
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


def _receive(connection) -> Any:
    message = connection.recv()
    if isinstance(message, Exception):
        raise message
    return message


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _MALLOC_TUNABLES.value:
        allocator.restart_with_tunables()
    config = _CONFIG.value
    results = compare(
        config,
        _BATCH_SIZE.value or config.batch_size,
        _ROUNDS.value,
        _PER_ROUND.value,
        _TORCH_TUNABLES.value,
        _DEVICE.value,
        tuple(_JAX_IM2COL.value),
    )
    print(
        f"HRNet {results['variant']} ({results['parameters']:,} parameters, "
        f"{results['forward_gflops']:.2f} GFLOP forward), input {results['input_shape']}, "
        f"{results['dtype']} on {results.get('torch_device', results['device'])}"
    )
    print(
        f"train step median: JAX {results['jax_step_median_s'] * 1e3:.0f} ms, PyTorch "
        f"{results['torch']} ({results['torch_threads']} threads, channels-last) "
        f"{results['torch_step_median_s'] * 1e3:.0f} ms; JAX / PyTorch = "
        f"{results['jax_over_torch']:.2f}"
    )
    for im2col in _JAX_IM2COL.value:
        name = f"jax_im2col_{im2col}"
        print(
            f"  JAX with config.model.im2col={im2col}: {results[f'{name}_step_median_s'] * 1e3:.0f}"
            f" ms; JAX / PyTorch = {results[f'{name}_over_torch']:.2f}"
        )
    tunables = results["jax_glibc_tunables"], results["torch_glibc_tunables"]
    print("GLIBC_TUNABLES: JAX {}, PyTorch {}".format(*tunables))
    if _JSON.value:
        files.write_json_atomically(_JSON.value, results)


if __name__ == "__main__":
    _MALLOC_TUNABLES = cli.define_malloc_tunables_flag()
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    _BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's).")
    _ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds of JAX and PyTorch steps.")
    _PER_ROUND = flags.DEFINE_integer("per_round", 2, "Timed steps of each per round.")
    _JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
    _TORCH_TUNABLES = flags.DEFINE_bool(
        "torch_tunables", False, "Give PyTorch's process our GLIBC_TUNABLES too."
    )
    _DEVICE = flags.DEFINE_enum(
        "device", "cpu", ["cpu", "cuda"], "PyTorch's device; JAX's default backend must match."
    )
    _JAX_IM2COL = flags.DEFINE_list(
        "jax_im2col",
        [],
        "Also time JAX with config.model.im2col set to each of these (auto, on, off), each in its "
        "own process, in the same turns.",
    )
    flags.mark_flags_as_required(["config"])
    app.run(main)
