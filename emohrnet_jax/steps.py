"""Train state, optimizer, and the jitted train and evaluation steps (no TensorFlow here)."""

import contextlib
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from emohrnet_jax import augment, metrics, models


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the BatchNorm running statistics."""

    batch_stats: Any


# Train states of equal configs share one model and one optimizer object, and `jit_steps` returns
# the same jitted steps for equal settings: a state's model and optimizer are part of its pytree
# structure, so a later run in the same process (cross-validation folds, tests) reuses the traced
# and compiled steps instead of tracing them again (a tiny HRNet's run: 32.8 -> 15.2 s).
_SHARED: dict[Any, Any] = {}


def _shared(key: Any, make) -> Any:
    if key not in _SHARED:
        _SHARED[key] = make()
    return _SHARED[key]


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full global batches per epoch (the incomplete last batch is dropped in training)."""
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(
            f"the training split has {num_examples} examples, fewer than one batch of {batch_size}"
        )
    return steps


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """AdamW with the config's values; optional warm-up + cosine decay and gradient clipping."""
    if config.lr_schedule == "constant":
        learning_rate = config.learning_rate
        if config.warmup_epochs:
            learning_rate = optax.linear_schedule(
                0.0, config.learning_rate, int(config.warmup_epochs * steps_per_epoch)
            )
    elif config.lr_schedule == "cosine":
        learning_rate = optax.warmup_cosine_decay_schedule(
            0.0,
            config.learning_rate,
            int(config.warmup_epochs * steps_per_epoch),
            config.num_epochs * steps_per_epoch,
        )
    else:
        raise ValueError(f"config.lr_schedule={config.lr_schedule!r} is not constant or cosine")
    optimizer = optax.adamw(
        learning_rate, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay
    )
    if config.grad_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
    return optimizer


def _on_host_cpu() -> contextlib.AbstractContextManager:
    """Makes this host's first CPU device the default one; changes nothing where JAX runs without
    its CPU backend (`JAX_PLATFORMS=cuda`, say)."""
    try:
        return jax.default_device(jax.local_devices(backend="cpu")[0])
    except RuntimeError:
        return contextlib.nullcontext()


def create_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int) -> TrainState:
    """A fresh train state: parameters from `config.seed`, AdamW state zeroed."""
    model = models.create_model(config)
    model = _shared(("model", model), lambda: model)  # modules are equal when their fields are
    # Every setting but the data's (e.g. the fold) may configure the optimizer.
    settings = {k: v for k, v in json.loads(config.to_json_best_effort()).items() if k != "data"}
    optimizer = _shared(
        ("optimizer", json.dumps(settings, sort_keys=True), steps_per_epoch),
        lambda: create_optimizer(config, steps_per_epoch),
    )
    # Drawn on the host's CPU whatever the backend, so that a seed gives the same parameters
    # everywhere. The arrays stay uncommitted: the jitted steps (or `jax.device_put`) move them
    # to the mesh. XLA's GPU compiler took 138-171 s for this program of ~330 random draws (W18,
    # docs/benchmark_history.md rounds 2 and 5); its CPU compiler takes ~28 s on a 2-core machine.
    with _on_host_cpu():
        mel = jnp.zeros((1, config.data.n_mels, config.data.num_frames), jnp.float32)
        # unsafe_rbg compiles the initializer several times faster than threefry: one XLA
        # program draws every parameter, and threefry's per-parameter rounds dominate its
        # compile time.
        key = jax.random.key(config.seed, impl="unsafe_rbg")
        variables = _shared(("init", model), lambda: jax.jit(model.init))(key, mel)
        state = TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            tx=optimizer,
        )
        # A typed step, as a checkpoint restores it: a weakly typed Python 0 would make the
        # jitted steps trace and compile again for the restored (best or resumed) state.
        return state.replace(step=jnp.zeros((), jnp.int32))


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    key: jax.Array,
    augment_config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW step on augmented inputs; returns the new state and the batch's loss/accuracy."""
    step_key = jax.random.fold_in(key, state.step)
    mel = augment.augment_batch(step_key, batch["mel"], augment_config, train=True)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, updates = state.apply_fn(variables, mel, train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    num_classes: int,
    classes: tuple[int, ...] | None = None,
) -> dict[str, jax.Array]:
    """Sums over the real (`mask`) examples of a batch: loss, count and the confusion matrix.

    `classes` restricts the prediction to those classes (cross-corpus: the mapped ones).
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = state.apply_fn(variables, batch["mel"], train=False)
    if classes is not None:
        logits = jnp.where(jnp.isin(jnp.arange(num_classes), jnp.array(classes)), logits, -jnp.inf)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    mask = batch["mask"]
    return {
        "loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)),
        "count": jnp.sum(mask),
        "confusion": metrics.confusion_counts(logits, batch["label"], mask, num_classes),
    }


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D `data` mesh over every device of every host, with compiler-chosen layouts inside."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def jit_steps(
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    num_classes: int,
    eval_classes: tuple[int, ...] | None = None,
):
    """Train and eval steps jitted over `mesh`: state replicated, batch split on the `data` axis.

    `eval_classes` restricts the eval step's predictions to those classes. Equal arguments give
    the same jitted functions (and so their compiled programs).
    """
    augment_config = ml_collections.FrozenConfigDict(config.augment)
    return _shared(
        ("steps", augment_config, mesh, num_classes, eval_classes),
        lambda: _jit_steps(augment_config, mesh, num_classes, eval_classes),
    )


def _jit_steps(augment_config, mesh, num_classes, eval_classes):
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    train = jax.jit(
        functools.partial(train_step, augment_config=augment_config),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    evaluate = jax.jit(
        functools.partial(eval_step, num_classes=num_classes, classes=eval_classes),
        in_shardings=(replicated, batch_sharding),
        out_shardings=replicated,
    )
    return train, evaluate
