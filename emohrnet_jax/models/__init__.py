"""EmoHRNet models and the helper that builds one from a config."""

import jax
import jax.numpy as jnp
import ml_collections

from emohrnet_jax.models import fast_conv
from emohrnet_jax.models.folding import fold_batch_norm
from emohrnet_jax.models.hrnet import VARIANTS, HRNet, HRNetSpec, StageSpec

__all__ = ["VARIANTS", "HRNet", "HRNetSpec", "StageSpec", "create_model", "fold_batch_norm"]

_DTYPES = ("float32", "bfloat16", "float16")
# Inference on every backend: 1x1 convolutions as matmuls (faster than XLA's on CPU, and a plain
# matmul everywhere), XLA's own for the rest, and BatchNorm folded into them.
_SERVING = {"conv": fast_conv.conv_1x1_as_matmul, "fold_norm": True}


def create_model(config: ml_collections.ConfigDict, serving: bool = False) -> HRNet:
    """Builds the HRNet named by `config.model.variant` for `config.data.n_mels` Mel bands.

    The one place where the model's convolutions are chosen: for training, the `fast_conv` ways
    that `config.model.im2col` and this process's backend call for; with `serving`, XLA's own
    convolutions (1x1 ones as matmuls), a program that suits any backend it is lowered for, with
    every BatchNorm folded into its convolution: its variables are `fold_batch_norm` of the
    trained ones. The same outputs in every case (up to float rounding where folded).

    Raises:
      ValueError: for an unknown variant, dtype or im2col setting, a class count that disagrees
        with `config.data.class_names`, or malformed stem strides.
    """
    model_config = config.model
    if model_config.variant not in VARIANTS:
        raise ValueError(
            f"unknown config.model.variant={model_config.variant!r}; "
            f"choose one of {sorted(VARIANTS)}"
        )
    for field in ("dtype", "param_dtype"):
        if model_config[field] not in _DTYPES:
            raise ValueError(
                f"config.model.{field}={model_config[field]!r} is not one of {_DTYPES}"
            )
    im2col = model_config.get("im2col", "auto")  # Runs saved before the setting existed: auto.
    convolutions = fast_conv.fields(im2col, jax.default_backend())  # Checks im2col.
    class_names = config.data.get("class_names")
    if class_names and len(class_names) != model_config.num_classes:
        raise ValueError(
            f"config.model.num_classes={model_config.num_classes} but config.data.class_names "
            f"lists {len(class_names)} classes: {list(class_names)}"
        )
    if model_config.num_classes < 2:
        raise ValueError(f"config.model.num_classes must be >= 2, got {model_config.num_classes}")
    stem_strides = tuple(tuple(int(s) for s in strides) for strides in model_config.stem_strides)
    if not stem_strides or any(len(s) != 2 or min(s) < 1 for s in stem_strides):
        raise ValueError(
            "config.model.stem_strides must be a non-empty list of (frequency, time) strides >= 1, "
            f"got {model_config.stem_strides!r}"
        )
    return HRNet(
        spec=VARIANTS[model_config.variant],
        num_classes=model_config.num_classes,
        n_mels=config.data.n_mels,
        stem_strides=stem_strides,
        dtype=jnp.dtype(model_config.dtype),
        param_dtype=jnp.dtype(model_config.param_dtype),
        **(_SERVING if serving else convolutions),
    )
