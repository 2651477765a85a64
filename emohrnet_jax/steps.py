"""Train state, optimizer, and the jitted train and evaluation steps (no TensorFlow here)."""

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from flax import struct

from emohrnet_jax import augment, models

# The config fields that `create_optimizer` reads: the train step's optimizer is keyed on them.
OPTIMIZER_FIELDS = (
    "learning_rate",
    "lr_schedule",
    "warmup_epochs",
    "num_epochs",
    "b1",
    "b2",
    "weight_decay",
    "grad_clip_norm",
)


class TrainState(struct.PyTreeNode):
    """What training updates and checkpoints: arrays only.

    The model and the optimizer are the steps' static settings, not part of the state, so the
    state is a plain pytree (the fields and names of flax's TrainState, whose checkpoints it
    restores) and equal settings share one traced step whatever state they are given.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    batch_stats: Any


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full global batches per epoch (the incomplete last batch is dropped in training)."""
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(
            f"the training split has {num_examples} examples, fewer than one batch of {batch_size}"
        )
    return steps


def optimizer_settings(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
    """The config's `OPTIMIZER_FIELDS`, hashable: what `create_optimizer` needs."""
    return ml_collections.FrozenConfigDict({field: config[field] for field in OPTIMIZER_FIELDS})


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


@functools.partial(jax.jit, static_argnums=0)
def _init_variables(model: nn.Module, key: jax.Array, mel: jax.Array) -> dict[str, Any]:
    """The model's variables; one XLA program, shared by equal (hashable) models."""
    return model.init(key, mel)


def create_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int) -> TrainState:
    """A fresh train state: parameters from `config.seed`, AdamW state zeroed."""
    model = models.create_model(config)
    # Drawn on the host's CPU whatever the backend, so that a seed gives the same parameters
    # everywhere, and because XLA's CPU compiler builds this program of hundreds of random
    # draws much faster than the GPU's. The arrays stay uncommitted: the jitted steps (or
    # `jax.device_put`) move them to the mesh.
    with _on_host_cpu():
        mel = jnp.zeros((1, config.data.n_mels, config.data.num_frames), jnp.float32)
        # unsafe_rbg compiles the initializer several times faster than threefry: one XLA
        # program draws every parameter, and threefry's per-parameter rounds dominate its
        # compile time.
        key = jax.random.key(config.seed, impl="unsafe_rbg")
        variables = _init_variables(model, key, mel)
        optimizer = create_optimizer(config, steps_per_epoch)
        return TrainState(
            # Typed, as a checkpoint restores it: a weakly typed Python 0 would make the
            # jitted steps trace and compile again for the restored (best or resumed) state.
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            opt_state=optimizer.init(variables["params"]),
            batch_stats=variables["batch_stats"],
        )


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    key: jax.Array,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    augment_config: ml_collections.ConfigDict,
    class_weights: tuple[float, ...] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW step on augmented inputs; returns the new state and the batch's loss/accuracy.

    `class_weights` (one per class; None: unweighted) weigh each example's loss by its class.
    """
    step_key = jax.random.fold_in(key, state.step)
    mel = augment.augment_batch(step_key, batch["mel"], augment_config, train=True)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, updates = model.apply(variables, mel, train=True, mutable=["batch_stats"])
        loss = cross_entropy(logits, batch["label"], class_weights)
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        batch_stats=batch_stats,
    )
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}


def cross_entropy(
    logits: jax.Array, labels: jax.Array, class_weights: tuple[float, ...] | None = None
) -> jax.Array:
    """The batch's mean cross-entropy; with `class_weights`, the mean weighted by each example's
    class weight, `sum(w * loss) / sum(w)`."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if class_weights is None:
        return losses.mean()
    # Normalized by the batch's weights, as PyTorch's CrossEntropyLoss(weight=...): every batch's
    # loss stays a mean of per-example losses, whatever classes the batch happens to hold.
    weights = jnp.asarray(class_weights, losses.dtype)[labels]
    return jnp.sum(weights * losses) / jnp.sum(weights)


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    model: nn.Module,
    num_classes: int,
    classes: tuple[int, ...] | None = None,
) -> dict[str, jax.Array]:
    """The float32 logits of every row (window) of `batch["mel"]`; the host averages an
    utterance's windows and scores them (emohrnet_jax.evaluation).

    `classes` restricts the prediction to those classes (cross-corpus: the mapped ones), the
    others' logits set to -inf.
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = model.apply(variables, batch["mel"], train=False).astype(jnp.float32)
    if classes is not None:
        logits = jnp.where(jnp.isin(jnp.arange(num_classes), jnp.array(classes)), logits, -jnp.inf)
    return {"logits": logits}


def global_batch(batch: dict[str, Any], keys, sharding) -> dict[str, jax.Array]:
    """The global arrays of the hosts' batches (`keys` of them): this host's rows go to its
    devices."""
    # The training loop's one explicit copy; with several processes JAX makes it through
    # make_array_from_callback, which the transfer guard counts as implicit.
    with jax.transfer_guard_host_to_device("allow"):
        return {k: jax.make_array_from_process_local_data(sharding, batch[k]) for k in keys}


def shardings() -> tuple[jax.sharding.Mesh, jax.sharding.Sharding, jax.sharding.Sharding]:
    """The data mesh, the replicated sharding (state) and the batch sharding (`data` axis)."""
    mesh = make_mesh()
    return (mesh, *_shardings(mesh))


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D `data` mesh over every device of every host, with compiler-chosen layouts inside."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def jit_steps(
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    num_classes: int,
    steps_per_epoch: int,
    eval_classes: tuple[int, ...] | None = None,
    class_weights: tuple[float, ...] | None = None,
) -> tuple[Callable, Callable]:
    """Train and eval steps jitted over `mesh`: state replicated, batch split on the `data` axis.

    `steps_per_epoch` sets the learning-rate schedule; `eval_classes` restricts the eval step's
    predictions to those classes; `class_weights` weigh the train step's loss (`train_step`).
    Equal settings give the same jitted functions, so the folds of a cross-validation (and tests)
    in one process trace and compile them once.
    """
    train = _jit_train_step(
        models.create_model(config),
        optimizer_settings(config),
        steps_per_epoch,
        ml_collections.FrozenConfigDict(config.augment),
        mesh,
        class_weights,
    )
    return train, jit_eval_step(config, mesh, num_classes, eval_classes)


def jit_eval_step(
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    num_classes: int,
    classes: tuple[int, ...] | None = None,
) -> Callable:
    """`jit_steps`' eval step alone, `(state, batch) -> logits`: it needs no optimizer."""
    return _jit_eval_step(models.create_model(config), mesh, num_classes, classes)


def _shardings(mesh: jax.sharding.Mesh) -> tuple[jax.sharding.Sharding, jax.sharding.Sharding]:
    """The replicated sharding (state, key, metrics) and the batch's (split on `data`)."""
    return (
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")),
    )


# Cached: a new jitted function would trace and compile again for equal settings.
@functools.cache
def _jit_train_step(
    model: nn.Module,
    optimizer: ml_collections.FrozenConfigDict,
    steps_per_epoch: int,
    augment_config: ml_collections.FrozenConfigDict,
    mesh: jax.sharding.Mesh,
    class_weights: tuple[float, ...] | None = None,
) -> Callable:
    """`train_step` jitted for these (hashable) settings: `(state, batch, key) -> (state,
    metrics)`."""
    replicated, batch_sharding = _shardings(mesh)
    step = functools.partial(
        train_step,
        model=model,
        optimizer=create_optimizer(optimizer, steps_per_epoch),
        augment_config=augment_config,
        class_weights=class_weights,
    )
    return jax.jit(
        step,
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


@functools.cache
def _jit_eval_step(
    model: nn.Module,
    mesh: jax.sharding.Mesh,
    num_classes: int,
    classes: tuple[int, ...] | None = None,
) -> Callable:
    """`eval_step` jitted for these (hashable) settings: `(state, batch) -> logits`, replicated
    (every host holds every row's logits)."""
    replicated, batch_sharding = _shardings(mesh)
    step = functools.partial(eval_step, model=model, num_classes=num_classes, classes=classes)
    return jax.jit(step, in_shardings=(replicated, batch_sharding), out_shardings=replicated)
