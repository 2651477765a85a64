"""BatchNorm folded into the convolution before it, for inference.

At inference a BatchNorm is the affine map `(y - mean) * scale / sqrt(var + eps) + bias` of its
running statistics, and every BatchNorm of the HRNet follows a bias-free convolution: the two are
one convolution with a rescaled kernel and a bias, the same function up to float rounding, with
one pass over the feature map instead of two. `fold_batch_norm` rewrites the variables for
`HRNet(fold_norm=True)`.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from emohrnet_jax.models.hrnet import BN_EPSILON


def _norm_name(conv_name: str) -> str:
    """The BatchNorm that follows convolution `conv_name` (the HRNet names them in pairs:
    `conv1`/`bn1`, `stem0_conv`/`stem0_bn`, `fuse0_from1_conv`/`fuse0_from1_bn`)."""
    return conv_name.replace("conv", "bn")


def _f32(x: Any) -> np.ndarray:
    # On the host: eager device ops would compile a program each (seconds at a predict's start).
    return np.asarray(x, np.float32)


def _fold(params: Mapping[str, Any], stats: Mapping[str, Any], path: str) -> dict[str, Any]:
    folded: dict[str, Any] = {}
    norms = {name for name in stats if "mean" in stats[name]}
    consumed = set()
    for name, value in params.items():
        if name in norms:
            continue  # Folded into its convolution.
        norm = _norm_name(name)
        if norm in norms and "kernel" in value and value["kernel"].ndim == 4:
            kernel, gamma, beta = value["kernel"], params[norm]["scale"], params[norm]["bias"]
            mean, var = stats[norm]["mean"], stats[norm]["var"]
            scale = _f32(gamma) / np.sqrt(_f32(var) + BN_EPSILON)
            folded[name] = {
                "kernel": (_f32(kernel) * scale).astype(kernel.dtype),
                "bias": (_f32(beta) - _f32(mean) * scale).astype(kernel.dtype),
            }
            consumed.add(norm)
        elif "kernel" in value:
            folded[name] = dict(value)  # A layer without a BatchNorm (the classifier).
        else:
            folded[name] = _fold(value, stats.get(name, {}), f"{path}{name}/")
    unpaired = sorted(norms - consumed)
    if unpaired:
        raise ValueError(f"BatchNorms without a convolution before them under {path!r}: {unpaired}")
    return folded


def fold_batch_norm(variables: Mapping[str, Any]) -> dict[str, Any]:
    """`{"params": ...}` for `HRNet(fold_norm=True)` from a trained model's `params` and
    `batch_stats`: every BatchNorm folded into the convolution that it follows.

    Raises:
      ValueError: a BatchNorm with no convolution before it (an architecture this does not know).
    """
    return {"params": _fold(variables["params"], variables.get("batch_stats", {}), "")}
