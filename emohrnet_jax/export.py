r"""Exports a run's best-validation classifier for serving without the training code.

  python -m emohrnet_jax.export --workdir=runs/demo --output=exported/demo
  python -m emohrnet_jax.export --workdir=gs://bucket/runs/demo --output=gs://bucket/exported/demo

writes to `--output`:

- `model.jax_exported`: `jax.export` serialized StableHLO, for CPU, CUDA and TPU by default
  (`--platforms`). Load it with JAX alone:
      exported = jax.export.deserialize(open(path, "rb").read())
      outputs = exported.call(mel)
- `saved_model/`: a TensorFlow SavedModel made with `jax.experimental.jax2tf` (the same
  StableHLO inside an XlaCallModule op). Signature `serving_default`, one input named `mel`:
      tf.saved_model.load(path).signatures["serving_default"](mel=mel)
- `model.onnx`: the same function as ONNX (jax2onnx, `emohrnet_jax.onnx_export`), input `mel`,
  outputs `logits` and `probabilities`, for onnxruntime without JAX; written when jax2onnx is
  installed (the `onnx` extra), otherwise skipped with a one-line message.
- `metadata.json`: class names, feature parameters, normalization, window length, input and
  output shapes, the checkpoint's epoch and validation UA: what a server needs to make inputs.
  `normalization` gives the run's mode and formula (`utterance`: one mean and variance over the
  clip; `utterance_band`: each Mel band's over the clip's frames) and, for `training_band`, the
  training split's per-band `mean` and `scale`: the models take windows already normalized.

A non-empty `--output` is refused; with `--overwrite` it may be a previous export (its
`metadata.json` names it so, and it holds nothing else), which is replaced. A folder that is or
holds a training run (config.json beside checkpoints/), or holds other files, is never deleted.
A gs:// `--output` is a prefix, under the same rules; it is staged in a local temporary folder and
uploaded with `metadata.json` removed first and written last, so a reader never finds it beside a
partial export (and a prefix holding export files without it is an upload cut short, which
`--overwrite` replaces).

Both models take `mel`, a float32 batch `(batch, n_mels, num_frames)` of normalized log-Mel
windows (the batch size is symbolic: any size works), made as `emohrnet_jax.predict` makes them,
and return a dict of float32 `(batch, num_classes)`: `logits` and `probabilities` (softmax of
the logits divided by the run's fitted `temperature`, classes in the order of `class_names`). A
clip longer than one window: average the windows' logits, divide by the temperature, then take the
softmax.
"""

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from emohrnet_jax import (
    calibration,
    cli,
    export_folder,
    models,
    normalization,
    onnx_export,
    paths,
    runs,
    storage,
    windows,
)
from emohrnet_jax.audio import features
from emohrnet_jax.export_folder import (
    JAX_FILE,
    METADATA_FILE,
    ONNX_FILE,
    SAVED_MODEL_DIR,
)

SIGNATURE = "serving_default"
INPUT_NAME = "mel"
FORMATS = ("jax", "saved_model", "onnx")


def serving_function(config, variables: dict[str, Any], temperature: float = 1.0, model=None):
    """`mel (batch, n_mels, num_frames) -> {"logits", "probabilities"}` with the weights inside;
    the probabilities are the softmax of `logits / temperature`.

    The model (default: `models.create_model(serving=True)`) has XLA's own convolutions (1x1
    ones as matmuls), none of training's rewrites for this host's backend, so the program suits
    every platform it is lowered for, and BatchNorm folded into them (`variables` are the
    trained ones, folded here).
    """
    if model is None:
        model = models.create_model(config, serving=True)
    # Host copies: the weights become constants of the exported program, not device buffers.
    variables = models.fold_batch_norm(jax.device_get(variables))

    def serve(mel: jax.Array) -> dict[str, jax.Array]:
        logits = model.apply(variables, mel, train=False).astype(jnp.float32)
        return {"logits": logits, "probabilities": jax.nn.softmax(logits / temperature, axis=-1)}

    return serve


def input_spec(config) -> jax.ShapeDtypeStruct:
    """The serving input: a symbolic batch of `(n_mels, num_frames)` float32 windows."""
    (batch,) = jax.export.symbolic_shape("batch")
    return jax.ShapeDtypeStruct((batch, config.data.n_mels, config.data.num_frames), jnp.float32)


def export_jax(serve, config, platforms: Sequence[str]) -> bytes:
    """The serialized `jax.export.Exported` of `serve`, for `platforms`."""
    exported = jax.export.export(jax.jit(serve), platforms=tuple(platforms))(input_spec(config))
    return exported.serialize()


def export_saved_model(serve, config, platforms: Sequence[str], path: str) -> None:
    """A TensorFlow SavedModel of `serve` at `path` (imports TensorFlow)."""
    import tensorflow as tf  # Here only: the rest of the package serves without TensorFlow.
    from jax.experimental import jax2tf

    converted = jax2tf.convert(
        serve,
        polymorphic_shapes=["(batch, ...)"],
        native_serialization_platforms=tuple(platforms),
        with_gradient=False,
    )
    spec = tf.TensorSpec(
        [None, config.data.n_mels, config.data.num_frames], tf.float32, name=INPUT_NAME
    )
    module = tf.Module()
    module.serve = tf.function(converted, autograph=False, input_signature=[spec])
    tf.saved_model.save(module, path, signatures={SIGNATURE: module.serve.get_concrete_function()})


def normalization_metadata(normalizing: features.Normalization) -> dict[str, Any]:
    """How a server normalizes a clip's log-Mel (`metadata.json`'s `normalization`): the mode, the
    formula and, for `training_band`, the training split's per-band `mean` and `scale`."""
    how = {
        features.UTTERANCE: "one mean and variance over all of the clip's cells: "
        "(mel - mean) / sqrt(variance + epsilon)",
        features.UTTERANCE_BAND: "each Mel band's mean and variance over the clip's frames: "
        "(mel[band] - mean[band]) / sqrt(variance[band] + epsilon)",
        features.TRAINING_BAND: "the training split's statistics below, the same for every clip: "
        "(mel[band] - mean[band]) / scale[band], scale = sqrt(variance + epsilon)",
    }[normalizing.mode]
    info = {"mode": normalizing.mode, "formula": how, "epsilon": features.NORMALIZATION_EPSILON}
    if normalizing.mode == features.TRAINING_BAND:
        info.update(mean=list(normalizing.mean), scale=list(normalizing.scale))
    return info


def metadata(
    config,
    best: dict[str, Any],
    platforms: Sequence[str],
    formats,
    temperature: float = 1.0,
    normalizing: features.Normalization | None = None,
) -> dict[str, Any]:
    """What a server needs besides the model: how to make inputs and read outputs.

    `normalizing`: the run's (`normalization.load`; default: the config's mode, which must then
    not be `training_band`).
    """
    if normalizing is None:
        normalizing = features.Normalization(normalization.mode(config))
    n_mels, num_frames = int(config.data.n_mels), int(config.data.num_frames)
    num_classes = len(config.data.class_names)
    return {
        "class_names": list(config.data.class_names),
        "feature_params": runs.feature_params(config).as_dict(),
        "features": (
            "mono, resampled to sample_rate; natural-log Mel power (librosa, centred frames, "
            "power floored at log_floor); rounded to float16; normalized with the whole clip "
            "as `normalization` says"
        ),
        "normalization": normalization_metadata(normalizing),
        "normalization_epsilon": features.NORMALIZATION_EPSILON,
        "windows": {
            "num_frames": num_frames,
            "hop_frames": windows.default_hop(num_frames),
            "shorter_clips": "zero-padded at the end",
            "longer_clips": "windows every hop_frames frames (the last ending at the clip's end); "
            "average their logits, divide by temperature, then softmax",
        },
        "temperature": temperature,
        "input": {"name": INPUT_NAME, "shape": [None, n_mels, num_frames], "dtype": "float32"},
        "outputs": {
            name: {"shape": [None, num_classes], "dtype": "float32"}
            for name in ("logits", "probabilities")
        },
        "files": {
            **({"jax_export": JAX_FILE} if "jax" in formats else {}),
            **({"saved_model": SAVED_MODEL_DIR} if "saved_model" in formats else {}),
            **({"onnx": ONNX_FILE} if "onnx" in formats else {}),
        },
        "saved_model_signature": SIGNATURE,
        "platforms": list(platforms),
        "checkpoint": {key: best[key] for key in ("epoch", "step", "validation_ua") if key in best},
        "model": {key: config.model[key] for key in ("variant", "dtype")},
        "jax_version": jax.__version__,
    }


def export_run(
    workdir: str,
    output: str,
    formats: Sequence[str] = FORMATS,
    platforms: Sequence[str] = ("cpu", "cuda", "tpu"),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Exports the best-validation classifier of `workdir` to the folder `output`.

    The folder appears complete or not at all (written beside it, then renamed). A gs:// `output`
    is staged in a local temporary folder, then uploaded with its metadata.json last.

    `onnx` is left out when jax2onnx is not installed (`info["files"]` has no `onnx` then).

    Returns:
      The metadata written to `output/metadata.json`.

    Raises:
      runs.RunError: the run cannot be served.
      storage.StorageError: a gs:// `output` whose bucket is missing or refuses writes.
      FileExistsError: `output` holds files and is not a previous export that `overwrite` may
        replace (see `export_folder.check_replaceable`).
      ValueError: an unknown format.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be some of {FORMATS}, got {list(formats)}")
    if "onnx" in formats and not onnx_export.available():
        formats = [name for name in formats if name != "onnx"]
        if not formats:
            raise ValueError(onnx_export.MISSING)
    if storage.is_url(output):  # before the run is loaded: a missing bucket fails in seconds
        storage.check_writable(output, "--output")
    export_folder.check_replaceable(output, workdir, overwrite)
    config = runs.load_config(workdir)
    variables, best = runs.load_best_variables(workdir, config)
    temperature = calibration.load_temperature(workdir, best["step"])
    normalizing = normalization.load(config, workdir)
    info = metadata(config, best, platforms, formats, temperature, normalizing)
    if storage.is_url(output):
        with tempfile.TemporaryDirectory(prefix="emohrnet_jax_export_") as staging:
            _write_files(staging, config, variables, temperature, platforms, formats, info)
            # metadata.json is removed first and uploaded last: never beside a partial export.
            storage.upload_tree(staging, output, last=[METADATA_FILE])
        return info
    staging = f"{output.rstrip(os.sep)}.partial"
    if os.path.lexists(staging):
        # Left by a killed export; anything else of that name is the user's and stays.
        if os.path.islink(staging) or not set(os.listdir(staging)) <= export_folder.EXPORT_FILES:
            raise FileExistsError(f"{staging} exists and is not an unfinished export: move it")
        shutil.rmtree(staging)
    os.makedirs(staging)
    _write_files(staging, config, variables, temperature, platforms, formats, info)
    if os.path.exists(output):
        shutil.rmtree(output)
    os.replace(staging, output)
    return info


def _write_files(
    folder: str, config, variables, temperature, platforms, formats, info: dict[str, Any]
) -> None:
    """Writes the export's files into the local `folder`, metadata.json last."""
    serve = serving_function(config, variables, temperature)
    if "jax" in formats:
        with open(os.path.join(folder, JAX_FILE), "wb") as file:
            file.write(export_jax(serve, config, platforms))
    if "saved_model" in formats:
        export_saved_model(serve, config, platforms, os.path.join(folder, SAVED_MODEL_DIR))
    if "onnx" in formats:
        onnx_serve = serving_function(config, variables, temperature, onnx_export.model(config))
        onnx_export.export_onnx(onnx_serve, config, os.path.join(folder, ONNX_FILE), info)
    storage.write_json_atomically(os.path.join(folder, METADATA_FILE), info)


def _define_flags() -> None:
    # Defined only when run as a script, so that tests can import this module beside others.
    flags.DEFINE_string(
        "workdir", None, "Training run folder or gs:// URL (config.json, checkpoints/)."
    )
    flags.DEFINE_string("output", None, "Folder or gs:// prefix to write the exported model into.")
    flags.DEFINE_list("formats", list(FORMATS), f"Some of {', '.join(FORMATS)}.")
    flags.DEFINE_list(
        "platforms",
        ["cpu", "cuda", "tpu"],
        "Platforms the exported StableHLO is lowered for (cpu, cuda, rocm, tpu).",
    )
    flags.DEFINE_bool(
        "overwrite", False, "Replace a previous export at --output (never a run, nor other files)."
    )
    flags.mark_flags_as_required(["workdir", "output"])


def main(argv: list[str]) -> None:
    """The command line: exports, then prints where the files are."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    if not options["verbosity"].present:  # orbax's INFO lines would bury what this prints.
        logging.set_verbosity(logging.WARNING)
    cli.quiet_console()
    storage.configure()
    try:
        output = paths.location(options.output, "--output")
        workdir = paths.location(options.workdir, "--workdir")
        with cli.quiet_imports():  # TensorFlow's start-up lines (jax2tf)
            info = export_run(
                workdir, output, options.formats, options.platforms, options.overwrite
            )
    # PathError is a ValueError; StorageError (a bucket) and FileExistsError are OSErrors.
    except (runs.RunError, ValueError, OSError) as error:
        sys.exit(f"export: {error}")
    if "onnx" in options.formats and "onnx" not in info["files"]:
        print(f"export: {onnx_export.MISSING}", file=sys.stderr)
    checkpoint = info["checkpoint"]
    print(
        f"exported epoch {checkpoint.get('epoch')} (validation UA "
        f"{checkpoint.get('validation_ua', float('nan')):.4f}) to {output}: "
        f"{', '.join(info['files'].values())}, {METADATA_FILE}"
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
