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


def best_record(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch record with the highest validation UA: the state that a run reports and serves."""
    # Ties go to the later epoch, as orbax's BestN keeps the later of equal checkpoints.
    return max(history, key=lambda record: (record[METRIC], record["step"]))


def restore_best(workdir: str, like_state: Any) -> tuple[Any, dict[str, Any]]:
    """The best-validation state of the run in `workdir`, and its epoch record.

    Args:
      workdir: a training run's folder (the one holding `checkpoints/`).
      like_state: a state (or `jax.eval_shape` of one) with the checkpoint's structure, shapes,
        dtypes and shardings.

    Raises:
      FileNotFoundError: no checkpoint yet, or none from the end of an epoch.
    """
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint in {directory}: train this run first")
    # Read-only: a reader must never run the preservation policy (delete) on a run's folder.
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False),
    )
    latest = manager.latest_step()
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {directory}: train this run first")
    # The history alone: restoring the latest state too would cost a second full read.
    history = manager.restore(latest, args=ocp.args.Composite(history=ocp.args.JsonRestore()))
    if not history.history:
        raise FileNotFoundError(f"{directory} holds no completed epoch: train for one at least")
    best = best_record(list(history.history))
    state, _ = restore(manager, best["step"], like_state)
    return state, best
