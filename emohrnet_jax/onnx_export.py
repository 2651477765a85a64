"""The export's `model.onnx`: the serving function converted by jax2onnx, for onnxruntime.

jax2onnx traces the Flax model's jaxpr into ONNX ops, with a symbolic batch axis. The SavedModel
is no route: jax2tf wraps the program in one XlaCallModule op, which tf2onnx cannot convert
(docs/serving.md). The model is the serving one (XLA's own convolutions, BatchNorm with its running
statistics) with `traceable_resize` for its upsampling: jax2onnx's rule for `jax.image.resize`
needs a constant batch size, while the gather and `scale_and_translate` underneath it trace with a
symbolic one.

jax2onnx is optional (the `onnx` extra): without it, export writes its other files.
"""

import contextlib
import importlib.util
import io
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emohrnet_jax import models
from emohrnet_jax.export_folder import ONNX_FILE

# The first opset whose ReduceMean takes its axes as an input, as jax2onnx writes it.
OPSET = 21
# Key of model.onnx's metadata_props holding metadata.json's contents.
METADATA_KEY = "emohrnet_jax.metadata"
MISSING = (
    f"{ONNX_FILE} not written: jax2onnx is not installed "
    "(pip install 'emohrnet-jax[onnx]', then export again)"
)


def available() -> bool:
    """Whether jax2onnx can be imported (without importing it)."""
    return importlib.util.find_spec("jax2onnx") is not None


def traceable_resize(x: jax.Array, height: int, width: int, method: str) -> jax.Array:
    """`hrnet.resize_to` (nearest or bilinear) without `jax.image.resize`, whatever the batch.

    The same computation as `jax.image.resize`: nearest takes rows and columns
    `floor((i + 0.5) * size / new_size)` (float32, as JAX computes them); bilinear is its
    `scale_and_translate` with the scale `new_size / size` (antialiasing does nothing when
    upsampling).
    """
    sizes = {1: height, 2: width}
    axes = [axis for axis, size in sizes.items() if x.shape[axis] != size]
    if method == "nearest":
        for axis in axes:
            new_size = np.float32(sizes[axis])
            offsets = (np.arange(sizes[axis], dtype=np.float32) + 0.5) * np.float32(x.shape[axis])
            x = jnp.take(x, np.floor(offsets / new_size).astype(np.int32), axis=axis)
        return x
    if not axes:
        return x
    return jax.image.scale_and_translate(
        x,
        (x.shape[0], height, width, x.shape[3]),
        axes,
        jnp.array([sizes[axis] / x.shape[axis] for axis in axes], jnp.float32),
        jnp.zeros(len(axes), jnp.float32),
        "linear",
        precision=jax.lax.Precision.HIGHEST,
    )


def model(config):
    """The serving model (`models.create_model(serving=True)`) with `traceable_resize`."""
    return models.create_model(config, serving=True).clone(resize=traceable_resize)


def export_onnx(serve, config, path: str, metadata: dict[str, Any]) -> None:
    """Writes `serve` (`export.serving_function` of `model(config)`) to `path`
    as ONNX: input `mel` `(batch, n_mels, num_frames)`, outputs `logits` and `probabilities`,
    with `metadata` (metadata.json's contents) in the model's metadata_props."""
    import jax2onnx  # Here only: the optional `onnx` extra.

    def outputs(mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        served = serve(mel)
        return served["logits"], served["probabilities"]

    # jax2onnx's Flax Conv rule prints debugging lines; the command's output stays its own.
    with contextlib.redirect_stdout(io.StringIO()):
        onnx_model = jax2onnx.to_onnx(
            outputs,
            [("batch", int(config.data.n_mels), int(config.data.num_frames))],
            model_name="emohrnet_jax",
            opset=OPSET,
            input_names=["mel"],
            output_names=["logits", "probabilities"],
        )
    # jax2onnx's inferred intermediate shapes can disagree with onnxruntime's (W18 does not load
    # with them: "Incompatible dimensions"); onnxruntime infers its own.
    del onnx_model.graph.value_info[:]
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    with open(path, "wb") as file:
        file.write(onnx_model.SerializeToString())
