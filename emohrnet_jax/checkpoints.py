"""orbax checkpoints: the latest states for resuming and the best state by validation UA."""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

METRIC = "validation_ua"


def create_manager(workdir: str, keep_latest: int) -> ocp.CheckpointManager:
    """A manager in `workdir/checkpoints` keeping the latest `keep_latest` and the best state.

    Only epoch-end checkpoints carry the validation UA; a mid-epoch save (on preemption) has no
    metrics and is kept as one of the latest only.
    """
    policy = checkpoint_managers.AnyPreservationPolicy(
        [
            checkpoint_managers.LatestN(n=keep_latest),
            checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics[METRIC],
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True),
    )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    history: list[dict[str, Any]],
    validation_ua: float | None = None,
) -> None:
    """Saves the train state and the epoch history (asynchronously)."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)
        ),
        metrics=None if validation_ua is None else {METRIC: validation_ua},
    )


def restore(
    manager: ocp.CheckpointManager, step: int, like_state: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """The state (with `like_state`'s shapes, dtypes and shardings) and history saved at `step`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()
        ),
    )
    return restored.state, list(restored.history)
