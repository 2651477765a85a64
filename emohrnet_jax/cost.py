"""FLOPs of compiled XLA programs, from XLA's own cost analysis (no TensorFlow here)."""

from collections.abc import Mapping
from typing import Any


def compiled_flops(compiled: Any) -> float:
    """FLOPs of one call of a `jax.jit(...).lower(...).compile()` program (multiply, add apart)."""
    analysis: Mapping[str, float] | list[Mapping[str, float]] = compiled.cost_analysis()
    # Older jax versions return one dict per computation in a list.
    if isinstance(analysis, list):
        return sum(a.get("flops", 0.0) for a in analysis)
    return analysis.get("flops", 0.0)
