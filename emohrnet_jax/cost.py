"""FLOPs of jitted programs: XLA's cost analysis, and the convolutions and matmuls of the jaxpr."""

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.extend import core


def lowered_flops(lowered: Any) -> float | None:
    """XLA's FLOPs of one call of a `jax.jit(...).lower(...)` program, all devices together.

    Counted before compilation (multiply and add apart, element-wise operations included), so the
    count does not depend on the number of devices (a compiled data-parallel program counts one
    device's share). None where the backend has no such analysis (jax's GPU backend).
    """
    analysis: Mapping[str, float] | list[Mapping[str, float]] | None = lowered.cost_analysis()
    if not analysis:
        return None
    # Older jax versions return one dict per computation in a list.
    if isinstance(analysis, list):
        return sum(a.get("flops", 0.0) for a in analysis)
    return analysis.get("flops")


def flops(lowered: Any, function: Callable[..., Any], *args: Any) -> float:
    """XLA's FLOPs of `lowered` (`function` lowered for `args`), or `matmul_flops` without them."""
    xla = lowered_flops(lowered)
    return xla if xla is not None else matmul_flops(function, *args)


def matmul_flops(function: Callable[..., Any], *args: Any) -> float:
    """FLOPs of the convolutions and matrix products of `function(*args)` (2 per multiply-add).

    Read from the jaxpr, so the count is the same on every backend: the "model FLOPs" of MFU
    figures. Element-wise work (BatchNorm, activations, the optimizer) is left out.
    """
    return 2.0 * _multiply_adds(jax.make_jaxpr(function)(*args).jaxpr)


def _multiply_adds(jaxpr: core.Jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            # Input gradients of strided convolutions dilate the input with zeros: skip those.
            zeros = math.prod(eqn.params["lhs_dilation"])
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) / out_features / zeros
        elif eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            contracted = math.prod(lhs[d] for d in contracting)
            total += math.prod(eqn.outvars[0].aval.shape) * contracted
        repeats = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for sub in core.jaxprs_in_params(eqn.params):
            total += repeats * _multiply_adds(sub)
    return total
