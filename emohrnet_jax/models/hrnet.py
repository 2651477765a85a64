"""HRNet for log-Mel spectrograms (EmoHRNet), in flax.linen.

The structure follows the official HRNet classification code (Wang et al., 2019) with the HRNetV2
representation head: a 3x3 conv stem, stage 1 of Bottleneck blocks, stages 2-4 of
HighResolutionModules whose parallel branches exchange information by multi-resolution fusion, a
fuse layer that brings every branch to the highest resolution and mixes them with a 1x1 conv, then
global average pooling over (frequency, time) and a dense layer.

Spectrograms have arbitrary lengths, so a branch's size is ceil(size / 2) of the one above it and
upsampling resizes to the target branch's exact shape instead of by a fixed factor of 2.

The convolution is a field (`HRNet.conv`, `nn.Conv` unless set): `fast_conv` holds faster ways
to compute it with the same parameters, which `models.create_model` picks for the backend.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any
Strides = tuple[int, int]

# PyTorch's BatchNorm momentum 0.1 (the official code's value) is flax's 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One high-resolution stage: `num_modules` modules of `num_blocks` BasicBlocks per branch."""

    num_modules: int
    num_blocks: int
    widths: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class HRNetSpec:
    """Widths and depths of an HRNet variant (stage 1 is Bottlenecks, stages 2-4 are `stages`)."""

    stem_width: int
    stage1_blocks: int
    stage1_planes: int
    stages: tuple[StageSpec, ...]


def _stages(modules: Sequence[int], blocks: int, widths: Sequence[int]) -> tuple[StageSpec, ...]:
    return tuple(
        StageSpec(num_modules=m, num_blocks=blocks, widths=tuple(widths[: i + 2]))
        for i, m in enumerate(modules)
    )


# Official widths (HRNet-W18-Small-v1, -Small-v2, -W18), plus `tiny` for tests and `small` for the
# CPU demo.
VARIANTS: dict[str, HRNetSpec] = {
    "tiny": HRNetSpec(8, 1, 4, _stages((1, 1, 1), 1, (4, 8, 16, 32))),
    "small": HRNetSpec(16, 1, 8, _stages((1, 1, 1), 1, (8, 16, 32, 64))),
    "w18_small_v1": HRNetSpec(64, 1, 32, _stages((1, 1, 1), 2, (16, 32, 64, 128))),
    "w18_small_v2": HRNetSpec(64, 2, 64, _stages((1, 3, 2), 2, (18, 36, 72, 144))),
    "w18": HRNetSpec(64, 4, 64, _stages((1, 4, 3), 4, (18, 36, 72, 144))),
}


def _conv3x3(conv: ModuleDef, features: int, strides: Strides, name: str) -> nn.Module:
    # Symmetric padding of 1, as in PyTorch: the output size is ceil(size / stride) for any size.
    return conv(features, (3, 3), strides=strides, padding=((1, 1), (1, 1)), name=name)


def _unchanged(x: jax.Array) -> jax.Array:
    return x


def _no_norm(name: str) -> Callable[[jax.Array], jax.Array]:
    del name  # Called like `nn.BatchNorm(name=...)`.
    return _unchanged


def resize_to(x: jax.Array, height: int, width: int, method: str) -> jax.Array:
    """Resizes an NHWC map to exactly (height, width)."""
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method=method)


class Bottleneck(nn.Module):
    """Stage 1's block: 1x1-3x3-1x1 bottleneck with expansion 4 and a projected identity."""

    planes: int
    conv: ModuleDef
    norm: ModuleDef
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = self.planes * self.expansion
        residual = x
        y = nn.relu(self.norm(name="bn1")(self.conv(self.planes, (1, 1), name="conv1")(x)))
        y = nn.relu(self.norm(name="bn2")(_conv3x3(self.conv, self.planes, (1, 1), "conv2")(y)))
        y = self.norm(name="bn3")(self.conv(features, (1, 1), name="conv3")(y))
        if residual.shape[-1] != features:
            residual = self.conv(features, (1, 1), name="proj_conv")(residual)
            residual = self.norm(name="proj_bn")(residual)
        return nn.relu(y + residual)


class Transition(nn.Module):
    """Adapts the branches of one stage to the next and adds the new lower-resolution branches.

    An existing branch gets a 3x3 conv only when its width changes; a new branch is made from the
    lowest-resolution branch by strided 3x3 convs (one per resolution step).
    """

    widths: tuple[int, ...]
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
        outs = []
        for i, width in enumerate(self.widths):
            if i < len(xs):
                x = xs[i]
                if x.shape[-1] != width:
                    x = _conv3x3(self.conv, width, (1, 1), f"branch{i}_conv")(x)
                    x = nn.relu(self.norm(name=f"branch{i}_bn")(x))
            else:
                x = xs[-1]
                for k in range(i - len(xs) + 1):
                    x = _conv3x3(self.conv, width, (2, 2), f"branch{i}_down{k}_conv")(x)
                    x = nn.relu(self.norm(name=f"branch{i}_down{k}_bn")(x))
            outs.append(x)
        return outs


class BasicBlock(nn.Module):
    """A branch's block: 3x3-BN-ReLU-3x3-BN plus identity (projected when the width changes),
    then ReLU."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    materialize: Callable[[jax.Array], jax.Array] = _unchanged

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = _conv3x3(self.conv, self.features, (1, 1), "conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = _conv3x3(self.conv, self.features, (1, 1), "conv2")(y)
        y = self.norm(name="bn2")(y)
        if residual.shape[-1] != self.features:
            residual = self.conv(self.features, (1, 1), name="proj_conv")(residual)
            residual = self.norm(name="proj_bn")(residual)
        return self.materialize(nn.relu(y + residual))


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by multi-resolution fusion.

    Fusion into branch i from branch j: identity when j == i; a 1x1 conv + BN then
    nearest-neighbour upsampling to branch i's exact size when j > i; (i - j) strided 3x3 convs
    (BN+ReLU between, BN on the last) when j < i. The inputs are summed, then ReLU.
    """

    widths: tuple[int, ...]
    num_blocks: int
    conv: ModuleDef
    norm: ModuleDef
    materialize: Callable[[jax.Array], jax.Array] = _unchanged
    resize: Callable[..., jax.Array] = resize_to

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
        branches = []
        for i, (x, width) in enumerate(zip(xs, self.widths, strict=True)):
            for b in range(self.num_blocks):
                block = BasicBlock(
                    width, self.conv, self.norm, self.materialize, name=f"branch{i}_block{b}"
                )
                x = block(x)
            branches.append(x)
        return [self._fuse_into(i, branches) for i in range(len(branches))]

    def _fuse_into(self, i: int, branches: Sequence[jax.Array]) -> jax.Array:
        target = branches[i]
        total = target
        for j, x in enumerate(branches):
            if j > i:
                x = self.conv(self.widths[i], (1, 1), name=f"fuse{i}_from{j}_conv")(x)
                x = self.norm(name=f"fuse{i}_from{j}_bn")(x)
                x = self.resize(x, target.shape[1], target.shape[2], "nearest")
            elif j < i:
                for k in range(i - j):
                    last = k == i - j - 1
                    width = self.widths[i] if last else self.widths[j]
                    x = _conv3x3(self.conv, width, (2, 2), f"fuse{i}_from{j}_down{k}_conv")(x)
                    x = self.norm(name=f"fuse{i}_from{j}_down{k}_bn")(x)
                    if not last:
                        x = nn.relu(x)
            else:
                continue
            total = total + x
        return self.materialize(nn.relu(total))


class HRNet(nn.Module):
    """EmoHRNet: log-Mel spectrogram `(batch, n_mels, n_frames)` -> emotion logits.

    Attributes:
      spec: widths and depths (see `VARIANTS`).
      num_classes: number of emotion classes.
      n_mels: expected Mel bands; the input is checked against it when set.
      stem_strides: (frequency, time) stride of each 3x3 stem conv; the classic stem is two
        stride-2 convs.
      dtype: compute dtype (e.g. bfloat16); parameters are kept in `param_dtype`.
      conv: the convolution, called like `nn.Conv`. `fast_conv` has faster ways to compute it
        with the same parameters, which `models.create_model` picks for the backend.
      materialize: applied to the output of every BasicBlock and fusion (`fast_conv.materialize`
        for training on CPU); unchanged by default.
      resize: called like `resize_to` for every upsampling; the ONNX export sets a version that
        converters trace with a symbolic batch (`onnx_export.traceable_resize`).
      fold_norm: inference only: every BatchNorm is folded into the convolution before it (a
        kernel and a bias, from `folding.fold_batch_norm`), so there are none to run.
    """

    spec: HRNetSpec
    num_classes: int
    n_mels: int | None = None
    stem_strides: tuple[Strides, ...] = ((2, 2), (2, 2))
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv
    materialize: Callable[[jax.Array], jax.Array] = _unchanged
    resize: Callable[..., jax.Array] = resize_to
    fold_norm: bool = False

    @nn.compact
    def __call__(self, mel: jax.Array, train: bool = False) -> jax.Array:
        self._check_input(mel)
        if train and self.fold_norm:
            raise ValueError("an HRNet with BatchNorm folded into its convolutions cannot train")
        conv = functools.partial(
            self.conv,
            use_bias=self.fold_norm,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        )
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if self.fold_norm:
            norm = _no_norm

        x = mel[..., None].astype(self.dtype)  # NHWC: H = frequency, W = time.
        for k, strides in enumerate(self.stem_strides):
            x = _conv3x3(conv, self.spec.stem_width, tuple(strides), f"stem{k}_conv")(x)
            x = nn.relu(norm(name=f"stem{k}_bn")(x))
        self.sow("intermediates", "stem", x)

        for b in range(self.spec.stage1_blocks):
            x = Bottleneck(self.spec.stage1_planes, conv, norm, name=f"stage1_block{b}")(x)
        xs = [x]
        self.sow("intermediates", "stage1", tuple(xs))

        for s, stage in enumerate(self.spec.stages, start=2):
            xs = Transition(stage.widths, conv, norm, name=f"transition{s - 1}")(xs)
            for m in range(stage.num_modules):
                xs = HighResolutionModule(
                    stage.widths,
                    stage.num_blocks,
                    conv,
                    norm,
                    self.materialize,
                    self.resize,
                    name=f"stage{s}_module{m}",
                )(xs)
            self.sow("intermediates", f"stage{s}", tuple(xs))

        x = self._fuse_layer(xs, conv, norm)
        self.sow("intermediates", "fuse", x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier"
        )(x)
        return x.astype(jnp.float32)

    def _fuse_layer(self, xs: Sequence[jax.Array], conv: ModuleDef, norm: ModuleDef) -> jax.Array:
        """HRNetV2 head: every branch bilinearly upsampled to branch 0, concatenated, 1x1 conv."""
        height, width = xs[0].shape[1:3]
        x = jnp.concatenate(
            [xs[0]] + [self.resize(x, height, width, "bilinear") for x in xs[1:]], -1
        )
        x = conv(x.shape[-1], (1, 1), name="fuse_conv")(x)
        return nn.relu(norm(name="fuse_bn")(x))

    def _check_input(self, mel: jax.Array) -> None:
        if mel.ndim != 3:
            raise ValueError(
                f"HRNet expects log-Mel input of shape (batch, n_mels, n_frames), got {mel.shape}"
            )
        if self.n_mels is not None and mel.shape[1] != self.n_mels:
            raise ValueError(
                f"HRNet was configured for n_mels={self.n_mels} but got {mel.shape[1]} Mel bands "
                f"(input shape {mel.shape}); check config.data.n_mels against the prepared features"
            )
        if mel.shape[2] < 1:
            raise ValueError(f"HRNet got an input with no frames: shape {mel.shape}")
