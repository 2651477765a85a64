"""Tests of emohrnet_jax/cost.py: FLOP counts from XLA and from the jaxpr."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from emohrnet_jax import cost


def _conv(x, w, stride=1):
    dims = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=dims)


X = jnp.ones((2, 16, 12, 3))
W = jnp.ones((3, 3, 3, 5))
# 2 FLOPs per multiply-add: every output element of every output channel sums 3 x 3 x 3 products.
CONV_FLOPS = 2 * (2 * 16 * 12 * 5) * (3 * 3 * 3)


def test_counts_convolutions_and_matmuls_exactly():
    assert cost.matmul_flops(_conv, X, W) == CONV_FLOPS
    a, b = jnp.ones((4, 7, 6)), jnp.ones((6, 3))
    assert cost.matmul_flops(jax.jit(lambda a, b: jnp.tanh(a @ b)), a, b) == 2 * 4 * 7 * 3 * 6


def test_counts_a_scan_body_once_per_iteration():
    def body(carry, _):
        return carry @ jnp.ones((8, 8)), None

    def loop(x):
        return lax.scan(body, x, None, length=5)[0]

    assert cost.matmul_flops(loop, jnp.ones((2, 8))) == 5 * 2 * 2 * 8 * 8


@pytest.mark.parametrize("stride", [1, 2])
def test_a_gradient_costs_about_two_forward_passes(stride):
    def loss(x, w):
        return jnp.sum(jnp.sin(_conv(x, w, stride)))

    forward = cost.matmul_flops(loss, X, W)
    both_gradients = cost.matmul_flops(jax.grad(loss, argnums=(0, 1)), X, W)
    # The input gradient of a strided convolution runs on a zero-dilated map: not counted.
    assert both_gradients == pytest.approx(3 * forward, rel=0.15)


def test_xla_count_agrees_and_does_not_depend_on_the_devices():
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    sharded = jax.device_put(
        jnp.ones((8, 16, 12, 3)),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")),
    )
    conv = jax.jit(_conv)
    whole = cost.lowered_flops(conv.lower(jnp.ones((8, 16, 12, 3)), W))
    split = cost.lowered_flops(conv.lower(sharded, W))
    assert whole == pytest.approx(split, rel=1e-4)
    np.testing.assert_allclose(whole, cost.matmul_flops(conv, sharded, W), rtol=0.1)


def test_flops_fall_back_to_the_jaxpr_where_xla_has_no_analysis():
    class GpuLowered:  # jax's GPU backend answers None for a lowered program.
        def cost_analysis(self):
            return None

    assert cost.lowered_flops(GpuLowered()) is None
    assert cost.flops(GpuLowered(), _conv, X, W) == CONV_FLOPS
    lowered = jax.jit(_conv).lower(X, W)
    assert cost.flops(lowered, _conv, X, W) == cost.lowered_flops(lowered)
