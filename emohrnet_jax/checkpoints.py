"""orbax checkpoints: the latest states for resuming and the best state by validation UA."""

import functools
import json
import logging as python_logging
import os
import re
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers

from emohrnet_jax import storage

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
        storage.absolute(os.path.join(workdir, "checkpoints")),
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


class DamagedError(Exception):
    """A checkpoint that cannot be read back: a file truncated, emptied or missing."""


class MismatchError(ValueError):
    """A readable checkpoint whose tree or shapes differ from the state it is restored into."""


# TensorStore names the file (or OCDBT database folder) that it could not read in its message.
_NAMED_FILE = re.compile(r'local file "([^"]+)"')
# The JSON file that orbax reads first in each item's folder.
_JSON_FILES = {"state": "_METADATA", "history": "metadata"}


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from, innermost last."""
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) and cause not in chain:
        chain.append(cause)
    return chain


def _damaged(step_dir: str, item: str, error: Exception) -> DamagedError:
    """The error for `item` of the checkpoint in `step_dir`, naming the file that failed."""
    # orbax wraps TensorStore's error (which names the file) in a generic one.
    for cause in reversed(_causes(error)):
        named = _NAMED_FILE.findall(str(cause))
        if named:
            where = named[-1]
            break
        if isinstance(cause, json.JSONDecodeError):
            where = os.path.join(step_dir, item, _JSON_FILES[item])
            break
    else:
        cause, where = error, os.path.join(step_dir, item)
    reason = " ".join(str(cause).split())[:200] or type(cause).__name__
    return DamagedError(f"{where} is damaged ({type(cause).__name__}: {reason})")


def _is_failed_read_report(unraisable: Any) -> bool:
    # orbax's reading coroutines, and TensorStore's callbacks into the event loop orbax closed.
    if getattr(unraisable.object, "__qualname__", "") == "_read_array_index_and_device_put":
        return True
    return unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == (
        "Event loop is closed"
    )


@functools.cache
def _drop_failed_read_reports() -> None:
    """From now on, drops the reports of the reads still in flight when a restore failed.

    Every other array of a damaged OCDBT file fails too, each reported on stderr as a multi-line
    exception, from TensorStore's threads even after the restore has returned (22,928 lines for
    one truncated file of the tiny test model); DamagedError reports the first failure.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _is_failed_read_report(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    python_logging.getLogger("asyncio").addFilter(
        lambda record: "exception was never retrieved" not in record.getMessage()
    )


def _key_paths(tree: Any) -> dict[tuple[str, ...], Any]:
    """{path of names: shape} of a state or of orbax's metadata tree of one (same names)."""

    def name(key):
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _check_fits(step_dir: str, abstract: Any) -> None:
    """Raises DamagedError if the state's metadata is unreadable, MismatchError if it differs."""
    try:
        stored = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / "state")
    except Exception as error:  # orbax and TensorStore raise several kinds for a damaged file
        _drop_failed_read_reports()
        raise _damaged(step_dir, "state", error) from error
    saved, expected = _key_paths(stored), _key_paths(abstract)
    differ = sorted(k for k in saved.keys() | expected.keys() if saved.get(k) != expected.get(k))
    if differ:
        shown = "; ".join(
            f"{'.'.join(k)}: saved {saved.get(k, 'absent')}, expected {expected.get(k, 'absent')}"
            for k in differ[:3]
        )
        raise MismatchError(f"{len(differ)} arrays of {step_dir} differ from the model: {shown}")


def restore_history(manager: ocp.CheckpointManager, step: int) -> list[dict[str, Any]]:
    """The epoch history saved at `step`; DamagedError if it cannot be read."""
    try:
        restored = manager.restore(step, args=ocp.args.Composite(history=ocp.args.JsonRestore()))
    except Exception as error:  # as in _check_fits
        raise _damaged(os.path.join(manager.directory, str(step)), "history", error) from error
    return list(restored.history)


def restore_state(manager: ocp.CheckpointManager, step: int, like_state: Any) -> Any:
    """The state saved at `step`, with `like_state`'s shapes, dtypes and shardings.

    Raises:
      DamagedError: a file of the checkpoint cannot be read (the error names it).
      MismatchError: the checkpoint holds another model's or optimizer's arrays.
    """
    step_dir = os.path.join(manager.directory, str(step))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    _check_fits(step_dir, abstract)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
    except Exception as error:  # the tree fits (checked above), so a file is damaged
        _drop_failed_read_reports()
        raise _damaged(step_dir, "state", error) from error
    return restored.state


def restore(
    manager: ocp.CheckpointManager, step: int, like_state: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """The state (as `restore_state`) and the epoch history saved at `step`."""
    return restore_state(manager, step, like_state), restore_history(manager, step)


def _move_aside(manager: ocp.CheckpointManager, step: int) -> str:
    """Moves a damaged step folder to `checkpoints_damaged/` (kept, out of orbax's sight)."""
    source = os.path.join(manager.directory, str(step))
    target = os.path.join(f"{manager.directory}_damaged", str(step))
    suffix = 0
    while storage.exists(target):  # the same step damaged again after a resume
        suffix += 1
        target = os.path.join(f"{manager.directory}_damaged", f"{step}.{suffix}")
    storage.move(source, target)
    return target


def restore_latest(
    manager: ocp.CheckpointManager, like_state: Any
) -> tuple[Any, list[dict[str, Any]]] | None:
    """The newest checkpoint that restores, moving damaged ones aside; None when none does.

    Each skipped step is logged with the damaged file, so that nothing is lost without a word.
    """
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore(manager, step, like_state)
        except DamagedError as error:
            if jax.process_index() == 0:  # every host finds the damage; one moves the folder
                target = _move_aside(manager, step)
                logging.warning(
                    "Skipped checkpoint step %d: %s; moved it to %s", step, error, target
                )
            manager.reload()  # orbax must not list (or count for its policies) the moved step
    return None


def best_record(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch record with the highest validation UA: the state that a run reports and serves."""
    # Ties go to the later epoch, as orbax's BestN keeps the later of equal checkpoints.
    return max(history, key=lambda record: (record[METRIC], record["step"]))


def _newest_history(manager: ocp.CheckpointManager) -> list[dict[str, Any]]:
    """The history of the newest step whose history reads (each is the whole run's so far)."""
    error = None
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore_history(manager, step)
        except DamagedError as damaged:
            logging.warning("Skipped the history of checkpoint step %d: %s", step, damaged)
            error = error or damaged
    raise error


def restore_best(workdir: str, like_state: Any) -> tuple[Any, dict[str, Any]]:
    """The best-validation state of the run in `workdir`, and its epoch record.

    Args:
      workdir: a training run's folder (the one holding `checkpoints/`).
      like_state: a state (or `jax.eval_shape` of one) with the checkpoint's structure, shapes,
        dtypes and shardings.

    Raises:
      FileNotFoundError: no checkpoint yet, or none from the end of an epoch.
      DamagedError: the best state, or every step's history, cannot be read (the file is named).
      MismatchError: the checkpoint holds another model's or optimizer's arrays.
    """
    directory = storage.absolute(os.path.join(workdir, "checkpoints"))
    if not storage.isdir(directory):
        raise FileNotFoundError(f"no checkpoint in {directory}: train this run first")
    # Read-only: a reader must never run the preservation policy (delete) on a run's folder.
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False),
    )
    if manager.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {directory}: train this run first")
    # The history alone: restoring the latest state too would cost a second full read.
    history = _newest_history(manager)
    if not history:
        raise FileNotFoundError(f"{directory} holds no completed epoch: train for one at least")
    best = best_record(history)
    return restore_state(manager, best["step"], like_state), best
