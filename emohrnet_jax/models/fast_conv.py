"""Faster ways to compute HRNet's convolutions, with `nn.Conv`'s parameters and outputs.

`hrnet.HRNet` takes its convolution as a field (`conv`, called like `nn.Conv`) and a function
applied to the output of every BasicBlock and fusion (`materialize`). `fields` picks both for
`config.model.im2col` and the backend, once, in `models.create_model`. Every choice has
`nn.Conv`'s parameter tree, so checkpoints move between backends and settings.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Pair = tuple[int, int]
IM2COL = ("auto", "on", "off")
# `conv_with_matmul_kernel_grad` keeps XLA's kernel gradient for convolutions with fewer input and
# output channels than this: XLA's own is faster there on CPU.
MATMUL_KERNEL_GRAD_MIN_CHANNELS = 64


class PointwiseConv(nn.Conv):
    """A 1x1, stride-1 `nn.Conv` computed as a matmul over channels: same parameters and outputs.

    XLA's CPU backend computes the kernel gradient of a 1x1 convolution as a convolution whose
    window is the whole feature map, which is slow; the gradient of a matmul is a matmul. In
    inference, too, the matmul is faster there than XLA's 1x1 convolution.
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if tuple(self.kernel_size) != (1, 1) or self.feature_group_count != 1:
            raise ValueError("PointwiseConv is a 1x1 convolution without groups")
        shape = (1, 1, inputs.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = _pointwise(inputs, kernel[0, 0])
        return y if bias is None else y + bias


def _over_channels(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a^T b` over every axis but the last (channels): (a's channels, b's channels).

    XLA's CPU backend copies the left operand of such a product transposed (a few GB/s) before
    its matmul, so the operand with fewer channels goes on the left.
    """
    over_all_but_channels = ((tuple(range(a.ndim - 1)),) * 2, ((), ()))
    if b.shape[-1] < a.shape[-1]:
        return jax.lax.dot_general(b, a, over_all_but_channels).T
    return jax.lax.dot_general(a, b, over_all_but_channels)


@jax.custom_vjp
def _pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x` times `kernel` over channels, with the kernel gradient by `_gram`."""
    return _over_channels(x, kernel)


def _pointwise_forward(x, kernel):
    return _over_channels(x, kernel), (x, kernel)


def _pointwise_backward(residuals, dy):
    x, kernel = residuals
    return _over_channels(dy, kernel.T), _gram(x, dy)


_pointwise.defvjp(_pointwise_forward, _pointwise_backward)


def _patches(x: jax.Array, kernel_size: Pair, strides: Pair, out_hw: Pair) -> jax.Array:
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

    On GPU, XLA launches every cuDNN convolution (and its two gradients) from the host, between
    the CUDA graphs that hold the rest of the step, while matmuls and slicing run inside them:
    this helps small batches (scoring one clip) and costs large ones time and memory.
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


def _nhwc_conv(x: jax.Array, kernel: jax.Array, strides: Pair, padding: Any) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _kernel_grad_by_matmul(
    x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int], strides: Pair
) -> jax.Array:
    """A convolution's kernel gradient, from its padded input `x` and output gradient `dy`, as
    one matmul: of the input's patches with `dy` or, for a stride-1 convolution to fewer
    channels, of `dy` shifted to every kernel offset (the smaller of the two copies) with `x`.
    """
    kh, kw, in_channels, out_channels = kernel_shape
    if tuple(strides) == (1, 1) and out_channels < in_channels:
        (height, width), (padded_height, padded_width) = dy.shape[1:3], x.shape[1:3]
        shifted = [
            jnp.pad(
                dy, ((0, 0), (i, padded_height - height - i), (j, padded_width - width - j), (0, 0))
            )
            for i in range(kh)
            for j in range(kw)
        ]
        grad = _gram(jnp.concatenate(shifted, -1), x)
        return grad.reshape(kh, kw, out_channels, in_channels).transpose(0, 1, 3, 2)
    patches = _patches(x, (kh, kw), strides, dy.shape[1:3])
    return _gram(patches, dy).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_with_matmul_kernel_grad(x, kernel, strides, padding):
    return _nhwc_conv(x, kernel, strides, padding)


def _conv_forward(x, kernel, strides, padding):
    return _nhwc_conv(x, kernel, strides, padding), (x, kernel)


def _input_grad_by_phases(
    dy: jax.Array, kernel: jax.Array, strides: Pair, padding: Any, input_hw: Pair
) -> jax.Array:
    """A strided convolution's input gradient as one stride-1 convolution of `dy` whose outputs
    are the gradients of every stride phase of the padded input (the kernel taps that reach that
    phase, flipped), interleaved: the same FLOPs times about 16/9 for a 3x3 stride-2 kernel.

    XLA's CPU backend convolves `dy` dilated by the strides (zeros between its values) instead, at
    a few GFLOP/s.
    """
    kh, kw, in_channels, out_channels = kernel.shape
    (sh, sw), (height, width) = strides, input_hw
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)
    kernel = jnp.pad(kernel, ((0, taps_h * sh - kh), (0, taps_w * sw - kw), (0, 0), (0, 0)))
    # Tap (u, v) of phase (p, q) is the kernel's (sh * u + p, sw * v + q), flipped over (u, v).
    kernel = kernel.reshape(taps_h, sh, taps_w, sw, in_channels, out_channels)[::-1, :, ::-1]
    kernel = kernel.transpose(0, 2, 5, 1, 3, 4).reshape(taps_h, taps_w, out_channels, -1)
    full = ((taps_h - 1, taps_h - 1), (taps_w - 1, taps_w - 1))
    phases = _nhwc_conv(dy, kernel, (1, 1), full)
    batch, rows, columns, _ = phases.shape
    dx = phases.reshape(batch, rows, columns, sh, sw, in_channels).transpose(0, 1, 3, 2, 4, 5)
    dx = dx.reshape(batch, rows * sh, columns * sw, in_channels)
    (top, _), (left, _) = padding
    # Padded-input rows and columns that no window reaches have no gradient.
    missing = (
        (0, 0),
        (0, max(0, top + height - rows * sh)),
        (0, max(0, left + width - columns * sw)),
    )
    dx = jnp.pad(dx, (*missing, (0, 0)))
    return dx[:, top : top + height, left : left + width]


def _conv_backward(strides, padding, residuals, dy):
    x, kernel = residuals
    if strides == (1, 1):
        # The transpose of the linear map x -> conv(x): XLA's input gradient, no forward again.
        (dx,) = jax.linear_transpose(lambda x: _nhwc_conv(x, kernel, strides, padding), x)(dy)
    else:
        dx = _input_grad_by_phases(dy, kernel, strides, padding, x.shape[1:3])
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
    is one matmul (`_kernel_grad_by_matmul`) and whose input gradient, when strided, is a stride-1
    convolution (`_input_grad_by_phases`); XLA's forward and stride-1 input gradient are kept.
    For 2-D NHWC convolutions (the default here) with explicit padding and nothing else; with
    fewer than `MATMUL_KERNEL_GRAD_MIN_CHANNELS` input and output channels, XLA's convolution as
    it is.

    XLA's CPU backend computes a kernel gradient as a convolution that contracts over the batch
    (a handful of values) with the whole feature map as its window, well below its matmul speed.
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
    """`x` unchanged, as a product with the identity over channels.

    XLA's CPU backend copies the element-wise work that produced a block's output (BatchNorm,
    ReLU and the residual sums, a chain back through the earlier blocks) into every backward-pass
    fusion that reads it, instead of reading the stored result; a matmul's output is not copied
    that way. The product is exact for finite inputs (one 1.0 and zeros per output element) and
    costs 2 x channels FLOPs per element: a training trick for CPU, and nothing to serve with.
    """
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jax.lax.dot_general(x, eye, (((x.ndim - 1,), (0,)), ((), ())))


def _is_pointwise(kernel_size: Sequence[int], strides: Any) -> bool:
    return tuple(kernel_size) == (1, 1) and strides in (1, (1, 1))


def conv_1x1_as_matmul(
    features: int, kernel_size: Sequence[int], strides: Any = 1, **kwargs: Any
) -> nn.Module:
    """`nn.Conv(features, kernel_size, strides, **kwargs)`, as a `PointwiseConv` where 1x1."""
    if _is_pointwise(kernel_size, strides):
        return PointwiseConv(features, tuple(kernel_size), strides, **kwargs)
    return nn.Conv(features, tuple(kernel_size), strides, **kwargs)


def conv_with_matmul_grads(
    features: int, kernel_size: Sequence[int], strides: Any = 1, **kwargs: Any
) -> nn.Module:
    """`conv_1x1_as_matmul`, other convolutions with `conv_with_matmul_kernel_grad`."""
    if _is_pointwise(kernel_size, strides):
        return PointwiseConv(features, tuple(kernel_size), strides, **kwargs)
    kwargs = {**kwargs, "conv_general_dilated": conv_with_matmul_kernel_grad}
    return nn.Conv(features, tuple(kernel_size), strides, **kwargs)


def conv_as_patch_matmul(
    features: int, kernel_size: Sequence[int], strides: Any = 1, **kwargs: Any
) -> nn.Module:
    """`conv_1x1_as_matmul`, other convolutions as `PatchConv`s."""
    if _is_pointwise(kernel_size, strides):
        return PointwiseConv(features, tuple(kernel_size), strides, **kwargs)
    return PatchConv(features, tuple(kernel_size), strides, **kwargs)


def fields(im2col: str, backend: str) -> dict[str, Any]:
    """`HRNet`'s `conv` and `materialize` for `config.model.im2col` on `backend` (for training).

    1x1 stride-1 convolutions are matmuls in every case. Other convolutions: "on" gives
    `PatchConv`s, "off" XLA's convolutions, and "auto" XLA's with `conv_with_matmul_kernel_grad`
    on CPU and XLA's elsewhere (cuDNN's on GPU, which serve large batches better than
    `PatchConv`). On CPU every block's output is `materialize`d.

    Raises:
      ValueError: an `im2col` that is not one of `IM2COL`.
    """
    if im2col not in IM2COL:
        raise ValueError(f"config.model.im2col={im2col!r} is not one of {IM2COL}")
    on_cpu = backend == "cpu"
    conv = {
        "on": conv_as_patch_matmul,
        "off": conv_1x1_as_matmul,
        "auto": conv_with_matmul_grads if on_cpu else conv_1x1_as_matmul,
    }[im2col]
    return {"conv": conv, "materialize": materialize} if on_cpu else {"conv": conv}
