"""A finished training run read back for inference: its config and its best state's variables.

Shared by prediction and export, so both serve the state that the run reports (best validation
UA). No TensorFlow here.
"""

import os
from typing import Any

import jax
import ml_collections

from emohrnet_jax import checkpoints, models, steps, storage
from emohrnet_jax.audio import features


class RunError(Exception):
    """A workdir that cannot be served: missing, untrained, damaged, or a checkpoint that does not
    fit."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The full config that trained the run in `workdir` (`workdir/config.json`), a folder or gs://.

    Raises:
      RunError: `workdir` or its config.json is missing or unreadable.
    """
    if not storage.isdir(workdir):
        raise RunError(f"--workdir={workdir} is not a folder")
    path = os.path.join(workdir, "config.json")
    if not storage.exists(path):
        raise RunError(
            f"{path} is missing: --workdir must be the folder of a training run "
            "(python -m emohrnet_jax.main --workdir=...)"
        )
    try:
        return ml_collections.ConfigDict(storage.read_json(path))
    except (OSError, ValueError) as error:
        raise RunError(f"cannot read {path}: {error}") from error


def describe(config: ml_collections.ConfigDict) -> str:
    """The config fields that fix the parameters' shapes, for error messages."""
    return (
        f"variant={config.model.variant}, n_mels={config.data.n_mels}, "
        f"num_classes={config.model.num_classes}"
    )


def load_best_variables(
    workdir: str, config: ml_collections.ConfigDict
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best-validation `{"params", "batch_stats"}` of the run, on the default device.

    Returns:
      The variables for `models.create_model(config).apply`, and the best epoch's record
      (epoch, step, validation UA, ...).

    Raises:
      RunError: no checkpoint, no completed epoch, a damaged best checkpoint (the file is named),
        or parameters that do not fit `config`'s model.
    """
    try:
        models.create_model(config)
    except ValueError as error:
        raise RunError(f"{os.path.join(workdir, 'config.json')}: {error}") from error
    # Shapes only: the optimizer state must match the checkpoint's structure, and building the
    # real state would compile the initializer for nothing.
    abstract = jax.eval_shape(lambda: steps.create_train_state(config, steps_per_epoch=1))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
    )
    try:
        state, best = checkpoints.restore_best(workdir, abstract)
    except FileNotFoundError as error:
        raise RunError(str(error)) from error
    except checkpoints.DamagedError as error:
        raise RunError(f"cannot load the run in {workdir}: {error}") from error
    except checkpoints.MismatchError as error:
        raise RunError(
            f"the checkpoint in {os.path.join(workdir, 'checkpoints')} does not fit the model of "
            f"its config.json ({describe(config)}): {error}"
        ) from error
    return {"params": state.params, "batch_stats": state.batch_stats}, best


def feature_params(config: ml_collections.ConfigDict) -> features.FeatureParams:
    """The log-Mel parameters the run was trained on."""
    return features.FeatureParams.from_config(config.data)
