"""A run folder as training leaves it, made in a second: for prediction and export tests.

Training even the tiny config costs minutes of XLA compilation on this CPU, and so does compiling
the parameter initializer; serving only needs the folder's config.json and checkpoints. So this
writes them with the training code's own writers, around two states of the real TrainState's
structure filled with random numbers (no compilation). The best state (by validation UA) is the
earlier one and the latest is another, so a reader that took the latest checkpoint is caught.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from emohrnet_jax import checkpoints, models, steps, storage
from tests import helpers


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """The folder and what was saved in it."""

    workdir: str
    config: ml_collections.ConfigDict
    best: Any  # the TrainState with the highest validation UA (step 4)
    latest: Any  # a different TrainState, saved later with a lower UA (step 8)


def config() -> ml_collections.ConfigDict:
    """The demo config with the tiny HRNet on 32 bands and 32-frame (0.5 s) windows."""
    run_config = helpers.load_config("demo")
    run_config.data.n_mels, run_config.data.n_fft, run_config.data.num_frames = 32, 512, 32
    run_config.model.variant = "tiny"
    return run_config


def random_state(run_config: ml_collections.ConfigDict, seed: int) -> Any:
    """A TrainState of the config's structure, shapes and dtypes, with random values."""
    abstract = jax.eval_shape(lambda: steps.create_train_state(run_config, steps_per_epoch=4))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        noise = rng.normal(0.0, 1.0, leaf.shape)
        # Roughly what training leaves: scaled kernels, unit BatchNorm scales and variances
        # (which must be positive), small biases and means; the model then responds to its input.
        if "kernel" in name:
            values = noise * np.sqrt(2.0 / max(1, int(np.prod(leaf.shape[:-1]))))
        elif "scale" in name or "var" in name:
            values = 1.0 + 0.1 * np.abs(noise)
        else:
            values = 0.1 * noise
        return np.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def make(workdir: str, run_config: ml_collections.ConfigDict | None = None) -> SavedRun:
    """Writes config.json and two epoch checkpoints (steps 4 and 8) into `workdir`, for
    `run_config` (default: `config()`; another must keep its model and features)."""
    run_config = config() if run_config is None else run_config
    os.makedirs(workdir, exist_ok=True)
    # As train.train_and_evaluate writes it.
    storage.write_json_atomically(
        os.path.join(workdir, "config.json"), json.loads(run_config.to_json_best_effort())
    )
    best, latest = random_state(run_config, 0), random_state(run_config, 1)
    manager = checkpoints.create_manager(workdir, run_config.keep_checkpoints)
    history = []
    for epoch, (state, ua) in enumerate([(best, 0.6), (latest, 0.4)], start=1):
        history.append({"epoch": epoch, "step": 4 * epoch, "validation_ua": ua})
        checkpoints.save(manager, 4 * epoch, state, list(history), ua)
    manager.wait_until_finished()
    return SavedRun(str(workdir), run_config, best, latest)


def flax_logits(run: SavedRun, mel: np.ndarray) -> np.ndarray:
    """The Flax model's logits with the best state, one window at a time.

    One window per call: a single compiled shape that every serving test shares (through the
    session's persistent compilation cache), whatever the number of windows.
    """
    model = models.create_model(run.config)
    apply = jax.jit(model.apply, static_argnames="train")
    variables = {"params": run.best.params, "batch_stats": run.best.batch_stats}
    return np.concatenate([apply(variables, window[None], train=False) for window in mel])
