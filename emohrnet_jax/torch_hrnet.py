"""`emohrnet_jax.models.hrnet.HRNet` in PyTorch, for `emohrnet_jax.pytorch_reference`.

Built from the same `VARIANTS` spec as the JAX model (stem, Bottleneck stage 1,
HighResolutionModules with multi-resolution fusion, HRNetV2 fuse layer, pooling, dense head), with
its AdamW train step and the check that both models have the same parameters and FLOPs. This
module needs PyTorch (no dependency of EmoHRNet-JAX): only `pytorch_reference`'s PyTorch process
imports it.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter

from emohrnet_jax import cost, models
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
    """Two 3x3 convolutions with a residual (`hrnet.BasicBlock`)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, (1, 1), True), _conv_bn(cout, cout, (1, 1), False)
        )
        self.residual = _projection(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.residual(x))


class Bottleneck(nn.Module):
    """1x1, 3x3, 1x1 convolutions with a residual (`hrnet.Bottleneck`)."""

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
    """Adapts the branches of one stage to the next and adds the new, coarser branch."""

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
    """Parallel branches of BasicBlocks, then the multi-resolution fusion."""

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


def train_step(
    model: nn.Module, config: ml_collections.ConfigDict, device: torch.device
) -> Callable[..., Any]:
    """One AdamW step of `model` on a batch (under bfloat16 autocast when the config's dtype is
    bfloat16); returns the loss."""
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
