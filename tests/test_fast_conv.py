"""Tests of `fast_conv`: each rewrite has `nn.Conv`'s parameters, outputs and gradients, and
`fields` picks them per backend and `config.model.im2col` without changing the parameter tree."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emohrnet_jax.models import VARIANTS, HRNet, fast_conv


def _assert_computes_like(module: nn.Module, conv: nn.Conv, x: jax.Array, atol: float) -> None:
    """`module` has `conv`'s parameters, outputs and gradients (of parameters and input)."""
    variables = conv.init(jax.random.key(0), x)
    chex.assert_trees_all_equal(module.init(jax.random.key(0), x), variables)

    def loss(module, variables, x):
        return jnp.sum(jnp.sin(module.apply(variables, x)))

    chex.assert_trees_all_close(
        jax.value_and_grad(functools.partial(loss, module), argnums=(0, 1))(variables, x),
        jax.value_and_grad(functools.partial(loss, conv), argnums=(0, 1))(variables, x),
        rtol=1e-5,
        atol=atol,
    )


def test_pointwise_conv_is_a_1x1_conv_with_the_same_parameters_and_gradients():
    x = jax.random.normal(jax.random.key(1), (2, 5, 7, 6))
    pointwise = fast_conv.conv_1x1_as_matmul(4, (1, 1), use_bias=False)
    assert isinstance(pointwise, fast_conv.PointwiseConv)
    _assert_computes_like(pointwise, nn.Conv(4, (1, 1), use_bias=False), x, atol=1e-6)
    # With a bias, as the serving model's folded BatchNorms give it (the bias gradient is compared).
    with_bias = fast_conv.conv_1x1_as_matmul(4, (1, 1), use_bias=True)
    assert isinstance(with_bias, fast_conv.PointwiseConv)
    _assert_computes_like(with_bias, nn.Conv(4, (1, 1), use_bias=True), x, atol=1e-6)
    # More output than input channels: the kernel gradient's product the other way round.
    wider = fast_conv.conv_1x1_as_matmul(8, (1, 1), use_bias=False)
    _assert_computes_like(wider, nn.Conv(8, (1, 1), use_bias=False), x, atol=1e-6)
    strided = fast_conv.conv_1x1_as_matmul(4, (1, 1), strides=(2, 2))
    assert not isinstance(strided, fast_conv.PointwiseConv)
    assert not isinstance(fast_conv.conv_1x1_as_matmul(4, (3, 3)), fast_conv.PointwiseConv)


@pytest.mark.parametrize(
    "shape, strides, features",
    [
        ((2, 9, 14, 3), (1, 1), 6),
        ((2, 9, 14, 3), (2, 2), 6),
        ((1, 8, 1, 5), (2, 1), 6),
        ((2, 10, 7, 3), (1, 2), 6),
        ((1, 7, 6, 2), (3, 2), 5),  # A stride beyond the kernel's reach in rows: phases of 1 tap.
        ((2, 9, 14, 6), (1, 1), 4),  # Fewer output channels: the shifted-gradient matmul.
        ((2, 9, 14, 6), (2, 2), 4),
    ],
)
@pytest.mark.parametrize("rewrite", ["patch_conv", "matmul_kernel_grad"])
def test_conv_rewrites_have_the_same_parameters_outputs_and_gradients(
    monkeypatch, rewrite, shape, strides, features
):
    monkeypatch.setattr(fast_conv, "MATMUL_KERNEL_GRAD_MIN_CHANNELS", 1)  # Matmuls at these widths.
    x = jax.random.normal(jax.random.key(1), shape)
    settings = {"strides": strides, "padding": ((1, 1), (1, 1)), "use_bias": False}
    if rewrite == "patch_conv":
        module = fast_conv.PatchConv(features, (3, 3), **settings)
    else:
        module = nn.Conv(
            features,
            (3, 3),
            conv_general_dilated=fast_conv.conv_with_matmul_kernel_grad,
            **settings,
        )
    _assert_computes_like(module, nn.Conv(features, (3, 3), **settings), x, atol=1e-5)


@pytest.mark.parametrize("channels, custom", [(64, True), (63, False)])
def test_matmul_kernel_grad_only_from_min_channels(channels, custom):
    x, kernel = jnp.zeros((1, 5, 5, 1)), jnp.zeros((3, 3, 1, channels))
    conv = functools.partial(fast_conv.conv_with_matmul_kernel_grad, window_strides=(1, 1))
    jaxpr = jax.make_jaxpr(lambda x, k: conv(x, k, padding=((1, 1), (1, 1))))(x, kernel)
    assert ("custom_vjp_call" in str(jaxpr)) is custom


def test_matmul_kernel_grad_refuses_what_it_does_not_compute():
    x, kernel = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 3))
    conv = fast_conv.conv_with_matmul_kernel_grad
    with pytest.raises(ValueError, match="plain NHWC convolutions"):
        conv(x, kernel, (1, 1), "SAME")
    with pytest.raises(ValueError, match="plain NHWC convolutions"):
        conv(x, kernel, (1, 1), ((1, 1), (1, 1)), rhs_dilation=(2, 2))
    nchw = ("NCHW", "OIHW", "NCHW")
    with pytest.raises(ValueError, match="plain NHWC convolutions"):
        conv(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=nchw)


def _how_computed(conv: nn.Module):
    """An `nn.Conv`'s `conv_general_dilated` (None: XLA's), else the module's class."""
    return conv.conv_general_dilated if type(conv) is nn.Conv else type(conv)


@pytest.mark.parametrize(
    "backend, im2col, expected, materialized",
    [
        ("cpu", "auto", fast_conv.conv_with_matmul_kernel_grad, True),
        ("cpu", "off", None, True),
        ("cpu", "on", fast_conv.PatchConv, True),
        ("gpu", "auto", None, False),
        ("gpu", "on", fast_conv.PatchConv, False),
        ("tpu", "auto", None, False),
    ],
)
def test_fields_pick_the_convolutions_for_the_backend(backend, im2col, expected, materialized):
    fields = fast_conv.fields(im2col, backend)
    conv = fields["conv"]
    assert _how_computed(conv(8, (3, 3), strides=(2, 2))) is expected
    assert isinstance(conv(8, (1, 1)), fast_conv.PointwiseConv)
    assert (fields.get("materialize") is fast_conv.materialize) is materialized
    assert fast_conv.fields(im2col, backend) == fields  # Equal models share compiled steps.


def test_fields_refuse_an_unknown_setting():
    with pytest.raises(ValueError, match="im2col='yes' is not one of"):
        fast_conv.fields("yes", "cpu")


# One of each way to compute the convolutions, as create_model picks them.
_CHOICES = [("cpu", "auto"), ("cpu", "on"), ("gpu", "auto")]


@pytest.mark.parametrize("variant", ["tiny", "small", "w18"])
def test_every_choice_has_the_parameter_tree_of_plain_convolutions(variant):
    """Checkpoints move between backends, settings and the serving model (plain `nn.Conv`)."""
    mel = jax.ShapeDtypeStruct((2, 64, 50), jnp.float32)
    plain = HRNet(spec=VARIANTS[variant], num_classes=4)

    def tree(model):
        variables = jax.eval_shape(model.init, jax.random.key(0), mel)
        return jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), variables)

    expected = tree(plain)
    for backend, im2col in _CHOICES:
        model = plain.clone(**fast_conv.fields(im2col, backend))
        assert tree(model) == expected, (backend, im2col)


@pytest.mark.parametrize("backend, im2col", _CHOICES)
def test_a_model_of_each_choice_computes_what_plain_convolutions_do(backend, im2col):
    plain = HRNet(spec=VARIANTS["tiny"], num_classes=4)
    mel = jax.random.normal(jax.random.key(1), (2, 64, 50))
    variables = jax.jit(plain.init)(jax.random.key(0, impl="unsafe_rbg"), mel)
    model = plain.clone(**fast_conv.fields(im2col, backend))
    logits = jax.jit(model.apply)(variables, mel)
    chex.assert_trees_all_close(logits, jax.jit(plain.apply)(variables, mel), rtol=1e-4, atol=1e-5)


def test_materialize_is_the_identity_with_an_identity_gradient():
    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 18)) * 1e3
    np.testing.assert_array_equal(jax.jit(fast_conv.materialize)(x), x)
    grad = jax.grad(lambda x: jnp.sum(jnp.sin(fast_conv.materialize(x))))(x)
    np.testing.assert_array_equal(grad, jnp.cos(x))
