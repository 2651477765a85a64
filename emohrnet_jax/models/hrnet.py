"""HRNet for log-Mel spectrograms (EmoHRNet), in flax.linen.

The structure follows the official HRNet classification code (Wang et al., 2019) with the HRNetV2
representation head: a 3x3 conv stem, stage 1 of Bottleneck blocks, stages 2-4 of
HighResolutionModules whose parallel branches exchange information by multi-resolution fusion, a
fuse layer that brings every branch to the highest resolution and mixes them with a 1x1 conv, then
global average pooling over (frequency, time) and a dense layer.

Spectrograms have arbitrary lengths, so a branch's size is ceil(size / 2) of the one above it and
upsampling resizes to the target branch's exact shape instead of by a fixed factor of 2.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any
Strides = tuple[int, int]

# PyTorch's BatchNorm momentum 0.1 (the official code's value) is flax's 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# `conv_with_matmul_kernel_grad` keeps XLA's kernel gradient for convolutions with fewer input and
# output channels than this (faster there on CPU: docs/benchmark_history.md, round 6).
MATMUL_KERNEL_GRAD_MIN_CHANNELS = 64


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
# CPU demo (XLA's per-op overhead dominates at these widths: `small` trains at ~half tiny's speed).
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


class PointwiseConv(nn.Conv):
    """A 1x1, stride-1 `nn.Conv` computed as a matmul over channels: same parameters and outputs.

    XLA's CPU backend computes the kernel gradient of a 1x1 convolution as a convolution whose
    window is the whole feature map, at a few GFLOP/s; the gradient of a matmul is a matmul
    (docs/performance.md).
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if tuple(self.kernel_size) != (1, 1) or self.use_bias or self.feature_group_count != 1:
            raise ValueError("PointwiseConv is a 1x1 convolution without bias or groups")
        shape = (1, 1, inputs.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
        return jax.lax.dot_general(inputs, kernel[0, 0], (((inputs.ndim - 1,), (0,)), ((), ())))


def _patches(x: jax.Array, kernel_size: Strides, strides: Strides, out_hw: Strides) -> jax.Array:
    """im2col of a padded NHWC map: (batch, height, width, kh * kw * channels) in (row, column,
    channel) order."""
    (kh, kw), (sh, sw), (height, width) = kernel_size, strides, out_hw
    return jnp.concatenate(
        [
            x[:, i : i + sh * (height - 1) + 1 : sh, j : j + sw * (width - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )


class PatchConv(nn.Conv):
    """A convolution (explicit padding, no bias, no groups) as one matmul over its input patches.

    The patches (im2col) are the kernel window's shifted, strided slices of the padded input,
    concatenated over channels in the kernel's (row, column, channel) order: same parameters and
    outputs as `nn.Conv`, the same FLOPs, and kernel-window times the input's bytes.

    With `im2col=True` (`config.model.im2col="on"`). On GPU, XLA launches every cuDNN
    convolution (and its two gradients) from the host, between the CUDA graphs that hold the rest
    of the step; matmuls and the slicing run inside the graphs. That makes one clip 3-4x faster
    to score on an H100, but batches slower (the train step 1.3x at batch 256, the evaluation
    step 2x) with 3x the memory (docs/benchmark_history.md rounds 5 and 7).
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if self.use_bias or self.feature_group_count != 1 or isinstance(self.padding, str):
            raise ValueError("PatchConv takes explicit padding, no bias and no groups")
        (kh, kw), (sh, sw) = tuple(self.kernel_size), tuple(self.strides or (1, 1))
        shape = (kh, kw, inputs.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
        x = jnp.pad(inputs, ((0, 0), *self.padding, (0, 0)))
        height = (x.shape[1] - kh) // sh + 1
        width = (x.shape[2] - kw) // sw + 1
        patches = _patches(x, (kh, kw), (sh, sw), (height, width))
        kernel = kernel.reshape(-1, self.features)
        return jax.lax.dot_general(patches, kernel, (((3,), (0,)), ((), ())))


def _nhwc_conv(x: jax.Array, kernel: jax.Array, strides: Strides, padding: Any) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _kernel_grad_by_matmul(
    x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int], strides: Strides
) -> jax.Array:
    """A convolution's kernel gradient, from its padded input `x` and output gradient `dy`, as
    one matmul: of the input's patches with `dy` or, for a stride-1 convolution to fewer
    channels, of `dy` shifted to every kernel offset (the smaller of the two copies) with `x`.
    """
    kh, kw, in_channels, out_channels = kernel_shape
    over_all_but_channels = (((0, 1, 2), (0, 1, 2)), ((), ()))
    if tuple(strides) == (1, 1) and out_channels < in_channels:
        (height, width), (padded_height, padded_width) = dy.shape[1:3], x.shape[1:3]
        shifted = [
            jnp.pad(
                dy, ((0, 0), (i, padded_height - height - i), (j, padded_width - width - j), (0, 0))
            )
            for i in range(kh)
            for j in range(kw)
        ]
        grad = jax.lax.dot_general(jnp.concatenate(shifted, -1), x, over_all_but_channels)
        return grad.reshape(kh, kw, out_channels, in_channels).transpose(0, 1, 3, 2)
    patches = _patches(x, (kh, kw), strides, dy.shape[1:3])
    return jax.lax.dot_general(patches, dy, over_all_but_channels).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_with_matmul_kernel_grad(x, kernel, strides, padding):
    return _nhwc_conv(x, kernel, strides, padding)


def _conv_forward(x, kernel, strides, padding):
    return _nhwc_conv(x, kernel, strides, padding), (x, kernel)


def _conv_backward(strides, padding, residuals, dy):
    x, kernel = residuals
    # The transpose of the linear map x -> conv(x): XLA's input gradient, and no forward again.
    (dx,) = jax.linear_transpose(lambda x: _nhwc_conv(x, kernel, strides, padding), x)(dy)
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    return dx, _kernel_grad_by_matmul(x, dy, kernel.shape, strides)


_conv_with_matmul_kernel_grad.defvjp(_conv_forward, _conv_backward)


def conv_with_matmul_kernel_grad(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """`lax.conv_general_dilated` (for `nn.Conv(conv_general_dilated=...)`) whose kernel gradient
    is one matmul (`_kernel_grad_by_matmul`); XLA's forward and input gradient are kept. For 2-D
    NHWC convolutions (the default here) with explicit padding and nothing else; with fewer than
    `MATMUL_KERNEL_GRAD_MIN_CHANNELS` input and output channels, XLA's convolution as it is.

    XLA's CPU backend computes a kernel gradient as a convolution that contracts over the batch
    (8 values at batch 8) with the whole feature map as its window: 64-channel 3x3 kernel
    gradients run at ~18 GFLOP/s, ~2.5x slower than the matmul (docs/benchmark_history.md, round 6).
    """
    nhwc = ("NHWC", "HWIO", "NHWC")
    dilations = (*(lhs_dilation or ()), *(rhs_dilation or ()))
    plain = (
        lhs.ndim == 4
        and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or nhwc)
        == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, nhwc)
        and not isinstance(padding, str)
        and all(d == 1 for d in dilations)
        and feature_group_count == 1
        and precision is None
    )
    if not plain:
        raise ValueError("conv_with_matmul_kernel_grad takes plain NHWC convolutions only")
    strides = tuple(window_strides)
    padding = tuple((int(low), int(high)) for low, high in padding)
    if max(rhs.shape[2:]) < MATMUL_KERNEL_GRAD_MIN_CHANNELS:
        return _nhwc_conv(lhs, rhs, strides, padding)
    return _conv_with_matmul_kernel_grad(lhs, rhs, strides, padding)


def materialize(x: jax.Array) -> jax.Array:
    """`x` unchanged, as a product with the identity over channels: computed once on CPU.

    XLA's CPU backend copies the element-wise work that produced a block's output (BatchNorm,
    ReLU and the residual sums, a chain back through the earlier blocks) into every backward-pass
    fusion that reads it, instead of reading the stored result; a matmul's output is not copied
    that way (docs/performance.md). The product is exact for finite inputs (one 1.0 and zeros per
    output element) and costs 2 x channels FLOPs per element. Other backends get `x` itself.
    """
    if jax.default_backend() != "cpu":
        return x
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jax.lax.dot_general(x, eye, (((x.ndim - 1,), (0,)), ((), ())))


def make_conv(
    features: int, kernel_size: Sequence[int], im2col: bool | None = None, **kwargs: Any
) -> nn.Conv:
    """`nn.Conv(features, kernel_size, **kwargs)`, computed the way that is fastest where it runs.

    A 1x1 stride-1 convolution is a `PointwiseConv`. Others: `im2col=True` gives a `PatchConv`,
    False XLA's convolution; None (auto) gives XLA's convolution with
    `conv_with_matmul_kernel_grad`'s kernel gradient on CPU, and XLA's convolution elsewhere (on
    GPU cuDNN's: `PatchConv` took 1.3x the train step at batch 256, twice the evaluation step and
    3x the memory on an H100, docs/benchmark_history.md round 7). All have the same parameters, so
    checkpoints move between backends and settings.
    """
    if tuple(kernel_size) == (1, 1) and kwargs.get("strides", 1) in (1, (1, 1)):
        return PointwiseConv(features, tuple(kernel_size), **kwargs)
    if im2col:
        return PatchConv(features, tuple(kernel_size), **kwargs)
    if im2col is None and jax.default_backend() == "cpu":
        kwargs = {**kwargs, "conv_general_dilated": conv_with_matmul_kernel_grad}
    return nn.Conv(features, tuple(kernel_size), **kwargs)


def resize_to(x: jax.Array, height: int, width: int, method: str) -> jax.Array:
    """Resizes an NHWC map to exactly (height, width)."""
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method=method)


class BasicBlock(nn.Module):
    """3x3-BN-ReLU-3x3-BN plus identity (projected when the width changes), then ReLU."""

    features: int
    conv: ModuleDef
    norm: ModuleDef

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
        return materialize(nn.relu(y + residual))


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with expansion 4 and a projected identity."""

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

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
        branches = []
        for i, (x, width) in enumerate(zip(xs, self.widths, strict=True)):
            for b in range(self.num_blocks):
                x = BasicBlock(width, self.conv, self.norm, name=f"branch{i}_block{b}")(x)
            branches.append(x)
        return [self._fuse_into(i, branches) for i in range(len(branches))]

    def _fuse_into(self, i: int, branches: Sequence[jax.Array]) -> jax.Array:
        target = branches[i]
        total = target
        for j, x in enumerate(branches):
            if j > i:
                x = self.conv(self.widths[i], (1, 1), name=f"fuse{i}_from{j}_conv")(x)
                x = self.norm(name=f"fuse{i}_from{j}_bn")(x)
                x = resize_to(x, target.shape[1], target.shape[2], "nearest")
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
        return materialize(nn.relu(total))


class HRNet(nn.Module):
    """EmoHRNet: log-Mel spectrogram `(batch, n_mels, n_frames)` -> emotion logits.

    Attributes:
      spec: widths and depths (see `VARIANTS`).
      num_classes: number of emotion classes.
      n_mels: expected Mel bands; the input is checked against it when set.
      stem_strides: (frequency, time) stride of each 3x3 stem conv; the classic stem is two
        stride-2 convs.
      dtype: compute dtype (e.g. bfloat16); parameters are kept in `param_dtype`.
      im2col: True: 3x3 convolutions as `PatchConv` matmuls; False: XLA's convolutions; None:
        chosen per backend (`make_conv`).
    """

    spec: HRNetSpec
    num_classes: int
    n_mels: int | None = None
    stem_strides: tuple[Strides, ...] = ((2, 2), (2, 2))
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    im2col: bool | None = None

    @nn.compact
    def __call__(self, mel: jax.Array, train: bool = False) -> jax.Array:
        self._check_input(mel)
        conv = functools.partial(
            make_conv,
            im2col=self.im2col,
            use_bias=False,
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
                    stage.widths, stage.num_blocks, conv, norm, name=f"stage{s}_module{m}"
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
        x = jnp.concatenate([xs[0]] + [resize_to(x, height, width, "bilinear") for x in xs[1:]], -1)
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
