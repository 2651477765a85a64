"""Training loop: data-parallel EmoHRNet training, validation every epoch, checkpoints, results.

The best state is chosen on validation UA only; the test split is evaluated once, at the end, with
that state. Re-running the same command resumes from the latest checkpoint with the same data order
and augmentation keys (both are functions of the seed and the step).
"""

import contextlib
import itertools
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from jax.experimental import multihost_utils

from emohrnet_jax import checkpoints, config_check, files, locks, metrics, run_config, steps
from emohrnet_jax.data import pipeline, sources, splits

TRAIN_KEYS = ("mel", "label")
EVAL_KEYS = ("mel", "label", "mask")
# The exit status of a run stopped by SIGTERM after saving: sysexits.h's EX_TEMPFAIL, which
# schedulers and wrapper scripts treat as "try again" (re-running resumes), unlike 0 or 1.
EXIT_PREEMPTED = 75


class _Preemption:
    """Notices SIGTERM (a TPU preemption or `kill`), so that the loop can save and stop."""

    def __init__(self):
        self._requested = False
        if jax.process_count() == 1:
            signal.signal(signal.SIGTERM, self._request)

    def _request(self, *_):
        self._requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:  # All hosts must agree on the step to stop at.
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested


def _global_batch(batch: dict[str, np.ndarray], keys, sharding) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(sharding, batch[k]) for k in keys}


def evaluate(
    eval_step, state, fold: pipeline.FoldInput, split: str, batch_size: int, sharding
) -> dict[str, Any]:
    """UA, WA, macro-F1, loss and confusion matrix over every example of `split`, once."""
    totals = None
    for batch in fold.eval_batches(split, batch_size, jax.process_index(), jax.process_count()):
        out = eval_step(state, _global_batch(batch, EVAL_KEYS, sharding))
        totals = out if totals is None else jax.tree.map(lambda a, b: a + b, totals, out)
    totals = jax.device_get(totals)
    summary = metrics.summarize(np.asarray(totals["confusion"]), fold.class_names)
    summary["loss"] = float(totals["loss_sum"] / max(int(totals["count"]), 1))
    return summary


def _shardings():
    """The data mesh, the replicated sharding (state) and the batch sharding (`data` axis)."""
    mesh = steps.make_mesh()
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return mesh, replicated, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def _check_devices(config: ml_collections.ConfigDict) -> None:
    devices = jax.device_count()
    if config.batch_size % devices:
        raise ValueError(
            f"config.batch_size={config.batch_size} must be a positive multiple of the "
            f"{devices} devices it is split over"
        )


def _holding(workdir: str) -> contextlib.AbstractContextManager:
    """The workdir's lock on process 0, the one that writes there; other hosts take none."""
    if jax.process_index() == 0:
        return locks.hold(workdir, "the workdir")
    return contextlib.nullcontext()


def _start_run(config: ml_collections.ConfigDict, workdir: str) -> pipeline.FoldInput:
    """The fold's input, once the workdir's saved run (if any) is known to match; writes
    config.json and splits.json."""
    is_main = jax.process_index() == 0
    if is_main:
        run_config.check_config(workdir, config)
    fold = pipeline.create_fold_input(config)
    if is_main:
        build = fold.builder.info.metadata.get(sources.METADATA_KEY)
        run_config.check_splits(workdir, fold.speakers, build)
        path = os.path.join(workdir, "splits.json")
        splits.save_splits(path, config.data.dataset, config.data.fold, fold.speakers, build)
        files.write_json_atomically(
            os.path.join(workdir, "config.json"), run_config.as_json(config)
        )
    return fold


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    """Trains on `config.data.fold`, keeps the best state by validation UA, tests it once.

    Returns the results (also written to `workdir/results.json`), or None when preempted after
    saving a checkpoint to resume from.

    Raises:
      config_check.ConfigError: a field that training cannot use.
      run_config.RunConfigError: `workdir` holds a run of another config or other speakers.
      locks.LockedError: another process is using `workdir`.
    """
    config_check.check(config)
    _check_devices(config)
    with _holding(workdir):
        return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    is_main = jax.process_index() == 0
    fold = _start_run(config, workdir)
    mesh, replicated, batch_sharding = _shardings()

    steps_per_epoch = steps.steps_per_epoch(fold.count("train"), config.batch_size)
    state = jax.device_put(steps.create_train_state(config, steps_per_epoch), replicated)
    train_step, eval_step = steps.jit_steps(config, mesh, len(fold.class_names))
    manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
    history: list[dict[str, Any]] = []
    resumed = checkpoints.restore_latest(manager, state)
    if resumed is not None:
        state, history = resumed
        logging.info("Resuming from step %d in %s", int(state.step), manager.directory)
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    key = jax.random.key(config.seed)
    preemption = _Preemption()
    step = int(state.step)
    seconds = history[-1]["train_seconds"] if history else 0.0

    # Inputs reach the devices only through the explicit `_global_batch`: an implicit host to
    # device copy inside the loop (a numpy array handed to a jitted step) is an error.
    with jax.transfer_guard_host_to_device("disallow"):
        for epoch in range(step // steps_per_epoch, config.num_epochs):
            started = time.perf_counter()
            batches = fold.train_batches(
                config.batch_size, config.seed, epoch, jax.process_index(), jax.process_count()
            )
            batches = itertools.islice(batches, step - epoch * steps_per_epoch, steps_per_epoch)
            sums, previous = {"loss": 0.0, "accuracy": 0.0, "steps": 0}, None
            for batch in batches:
                state, step_metrics = train_step(
                    state, _global_batch(batch, TRAIN_KEYS, batch_sharding), key
                )
                step += 1
                # Reading the previous step's loss keeps one step in flight while catching a NaN.
                if previous is not None:
                    _accumulate(sums, previous, step - 1, manager)
                previous = step_metrics
                if preemption.reached(step):
                    checkpoints.save(manager, step, state, history)
                    manager.wait_until_finished()
                    logging.warning("Preempted: saved step %d; re-run to resume", step)
                    return None
            _accumulate(sums, previous, step, manager)
            epoch_seconds = time.perf_counter() - started
            seconds += epoch_seconds
            validation = evaluate(
                eval_step, state, fold, "validation", config.batch_size, batch_sharding
            )
            record = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": sums["loss"] / sums["steps"],
                "train_accuracy": sums["accuracy"] / sums["steps"],
                "validation_loss": validation["loss"],
                "validation_ua": validation["ua"],
                "validation_wa": validation["wa"],
                "validation_macro_f1": validation["macro_f1"],
                "train_seconds": seconds,
                "examples_per_second": sums["steps"] * config.batch_size / epoch_seconds,
            }
            history.append(record)
            writer.write_scalars(
                step, {k: v for k, v in record.items() if k not in ("epoch", "step")}
            )
            checkpoints.save(manager, step, state, history, validation["ua"])
            logging.info(
                "epoch %d/%d  loss %.4f  val UA %.4f WA %.4f F1 %.4f  %.1f ex/s",
                epoch + 1,
                config.num_epochs,
                record["train_loss"],
                validation["ua"],
                validation["wa"],
                validation["macro_f1"],
                record["examples_per_second"],
            )
    manager.wait_until_finished()
    writer.flush()
    return _final_results(config, workdir, fold, manager, state, history, eval_step, batch_sharding)


def _accumulate(sums: dict[str, float], step_metrics, step: int, manager) -> None:
    values = jax.device_get(step_metrics)
    if not np.isfinite(values["loss"]):
        latest = manager.latest_step()
        saved = (
            "no checkpoint was saved yet"
            if latest is None
            else f"the last good checkpoint is step {latest} in {manager.directory}"
        )
        raise FloatingPointError(
            f"non-finite training loss {values['loss']} at step {step}; {saved} (lower the "
            "learning rate, or set config.grad_clip_norm)"
        )
    sums["loss"] += float(values["loss"])
    sums["accuracy"] += float(values["accuracy"])
    sums["steps"] += 1


def evaluate_run(config: ml_collections.ConfigDict, workdir: str, split: str) -> dict[str, Any]:
    """Scores a run's best-validation state on `split`; writes `evaluation_<name>.json` and `.png`.

    With `config.cross_corpus.dataset` set, the split is that corpus's (`all`: every speaker),
    its labels mapped onto the run's classes and predictions restricted to the mapped classes;
    `<name>` is then `<corpus>_<split>`.

    Raises:
      FileNotFoundError: `workdir` holds no trained run.
      locks.LockedError: another process is using `workdir` (training it, say).
    """
    config_check.check(config)
    if not os.path.isdir(workdir):  # holding the lock would create it
        raise FileNotFoundError(f"no run in {workdir}: train this run first")
    with _holding(workdir):
        return _evaluate_run(config, workdir, split)


def _evaluate_run(config: ml_collections.ConfigDict, workdir: str, split: str) -> dict[str, Any]:
    corpus = config.cross_corpus.dataset
    if corpus:
        fold, mapping, left_out = pipeline.create_cross_corpus_input(config, split)
        eval_classes = tuple(sorted({fold.class_names.index(ours) for ours in mapping.values()}))
        name = f"{corpus}_{split}"
    elif split == "all":
        raise ValueError(
            "--split=all scores every speaker, training speakers included: it is only meaningful "
            "for another corpus (set config.cross_corpus.dataset)"
        )
    else:
        fold, eval_classes, name = pipeline.create_fold_input(config), None, split
    mesh, replicated, batch_sharding = _shardings()
    # The optimizer state's structure, not its schedule's length, must match the checkpoint.
    state = jax.device_put(steps.create_train_state(config, steps_per_epoch=1), replicated)
    state, best = checkpoints.restore_best(workdir, state)
    _, eval_step = steps.jit_steps(config, mesh, len(fold.class_names), eval_classes)
    result = evaluate(eval_step, state, fold, split, config.batch_size, batch_sharding)
    if eval_classes is not None:
        kept = np.ix_(eval_classes, eval_classes)
        confusion = np.array(result["confusion_matrix"])[kept]
        result.update(metrics.summarize(confusion, [fold.class_names[i] for i in eval_classes]))
        result.update(dataset=corpus, label_map=mapping, left_out=left_out)
    result.update(split=split, best_epoch=best["epoch"], speakers=fold.speakers[split])
    if jax.process_index() == 0:
        path = os.path.join(workdir, f"evaluation_{name}")
        files.write_json_atomically(path + ".json", result)
        classes = list(result["per_class_recall"])
        metrics.plot_confusion_matrix(
            np.array(result["confusion_matrix"]), classes, path + ".png", title=name
        )
        print(
            f"{name}: UA {result['ua']:.4f}  WA {result['wa']:.4f}  "
            f"macro-F1 {result['macro_f1']:.4f}  N {result['num_examples']}"
        )
        for class_name, recall in result["per_class_recall"].items():
            print(f"  {class_name:<12} recall {'n/a' if recall is None else f'{recall:.4f}'}")
        if corpus and any(left_out.values()):
            print(f"  left out (not in the label map): {left_out}")
    return result


def _final_results(config, workdir, fold, manager, state, history, eval_step, sharding):
    """Restores the best-validation state, tests it once, writes results and pictures."""
    best = checkpoints.best_record(history)
    best_state = checkpoints.restore_state(manager, best["step"], state)
    results = {
        "dataset": config.data.dataset,
        "fold": config.data.fold,
        "class_names": list(fold.class_names),
        "best_epoch": best["epoch"],
        "best_step": best["step"],
        "train_seconds": history[-1]["train_seconds"],
        "examples_per_second": float(np.median([r["examples_per_second"] for r in history])),
        "speakers": fold.speakers,
        "validation": evaluate(
            eval_step, best_state, fold, "validation", config.batch_size, sharding
        ),
        "test": evaluate(eval_step, best_state, fold, "test", config.batch_size, sharding),
    }
    if jax.process_index() == 0:
        files.write_json_atomically(os.path.join(workdir, "results.json"), results)
        test = results["test"]
        metrics.plot_confusion_matrix(
            np.array(test["confusion_matrix"]),
            fold.class_names,
            os.path.join(workdir, "confusion_matrix.png"),
            title=f"{config.data.dataset} fold {config.data.fold}, test",
        )
        metrics.plot_curves(history, os.path.join(workdir, "curves.png"))
        print(metrics.format_table(results))
    return results
