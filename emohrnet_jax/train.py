"""Training loop: data-parallel EmoHRNet training, validation every epoch, checkpoints, results.

The best state is chosen on validation UA only; the test split is evaluated once, at the end, with
that state. Re-running the same command resumes from the latest checkpoint with the same data order
and augmentation keys (both are functions of the seed and the step).
"""

import contextlib
import dataclasses
import itertools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from emohrnet_jax import (
    calibration,
    checkpoints,
    compilation_cache,
    config_check,
    evaluation,
    locks,
    normalization,
    report,
    run_config,
    steps,
    storage,
    summaries,
    windows,
)
from emohrnet_jax.data import balance, pipeline, protocols, splits

TRAIN_KEYS = ("mel", "label")
# The exit status of a run stopped by SIGTERM after saving: sysexits.h's EX_TEMPFAIL, which
# schedulers and wrapper scripts treat as "try again" (re-running resumes), unlike 0 or 1.
EXIT_PREEMPTED = 75
# How long the other hosts wait for process 0 to build the synthetic corpus.
_PREPARE_TIMEOUT_MS = 30 * 60 * 1000


class Preemption:
    """Notices SIGTERM (a TPU preemption or `kill`), so that the loop can save and stop."""

    def __init__(self):
        self._requested = False
        # With several processes, jax.distributed's preemption notifier catches SIGTERM.
        if jax.process_count() == 1:
            signal.signal(signal.SIGTERM, self._request)

    def _request(self, *_):
        self._requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:  # All hosts must agree on the step to stop at.
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested


def check_devices(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError unless the batch splits evenly over the devices."""
    devices = jax.device_count()
    if config.batch_size % devices:
        raise ValueError(
            f"config.batch_size={config.batch_size} must be a positive multiple of the "
            f"{devices} devices it is split over"
        )


def holding(workdir: str) -> contextlib.AbstractContextManager:
    """The workdir's lock on process 0, the one that writes there; other hosts take none."""
    if jax.process_index() == 0:
        return locks.hold(workdir, "the workdir")
    return contextlib.nullcontext()


def _start_run(config: ml_collections.ConfigDict, workdir: str) -> pipeline.FoldInput:
    """The fold's input, once the workdir's saved run (if any) is known to match; writes
    config.json and splits.json."""
    if jax.process_index() == 0:
        run_config.check_config(workdir, config)
        fold = pipeline.create_fold_input(config)  # builds the synthetic corpus on first use
    # The other hosts wait, not to build it too. A barrier of JAX's coordination service: on CPU
    # a collective (sync_global_devices) fails a host that is 30 s late (gloo's connect timeout).
    wait_for_all = ocp.multihost.get_barrier_sync_fn()  # a no-op with one process
    wait_for_all(key=f"emohrnet_jax: the input of {workdir}", timeout_ms=_PREPARE_TIMEOUT_MS)
    if jax.process_index() != 0:
        return pipeline.create_fold_input(config)
    build = fold.build
    fingerprint = evaluation.fingerprint(fold)
    run_config.check_splits(workdir, fold.speakers, build, fingerprint)
    path = os.path.join(workdir, "splits.json")
    splits.save_splits(
        path,
        config.data.dataset,
        config.data.fold,
        fold.speakers,
        build,
        fingerprint,
        fold.protocol,
    )
    storage.write_json_atomically(os.path.join(workdir, "config.json"), run_config.as_json(config))
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
    check_devices(config)
    with holding(workdir):
        return _train(config, workdir)


@dataclasses.dataclass(frozen=True)
class Run:
    """The fixed parts of one training run: its config, folder, input, steps and outputs."""

    config: ml_collections.ConfigDict
    workdir: str
    fold: pipeline.FoldInput
    steps_per_epoch: int
    train_step: Callable
    eval_step: Callable
    batch_sharding: jax.sharding.Sharding
    class_weights: tuple[float, ...] | None  # of the training loss (None: unweighted)
    manager: Any  # orbax's CheckpointManager
    writer: summaries.EventWriter
    key: jax.Array  # the root of the augmentation keys

    def evaluate(self, state: steps.TrainState, split: str) -> dict[str, Any]:
        """`evaluation.evaluate` of `state` on `split` of this run's fold."""
        return evaluation.evaluate(*self._scoring(state, split))

    def predict(
        self, state: steps.TrainState, split: str
    ) -> tuple[dict[str, Any], evaluation.Predictions]:
        """`evaluate`, with the predictions."""
        return evaluation.evaluate_with_predictions(*self._scoring(state, split))

    def _scoring(self, state: steps.TrainState, split: str) -> tuple:
        windowing = windows.Windowing.from_config(self.config)
        batch = self.config.batch_size
        return self.eval_step, state, self.fold, split, batch, self.batch_sharding, windowing


def set_up(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[Run, steps.TrainState, list[dict[str, Any]]]:
    """The run, and its state and epoch history: fresh, or resumed from the latest checkpoint."""
    fold = _start_run(config, workdir)
    fold_normalization = normalization.for_run(config, workdir, fold, jax.process_index() == 0)
    fold = dataclasses.replace(fold, normalization=fold_normalization)
    mesh, replicated, batch_sharding = steps.shardings()
    steps_per_epoch = steps.steps_per_epoch(fold.count("train"), config.batch_size)
    state = jax.device_put(steps.create_train_state(config, steps_per_epoch), replicated)
    weights = _class_weights(config, fold)
    train_step, eval_step = steps.jit_steps(
        config, mesh, len(fold.class_names), steps_per_epoch, class_weights=weights
    )
    manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
    history: list[dict[str, Any]] = []
    resumed = checkpoints.restore_latest(manager, state)
    if resumed is not None:
        state, history = resumed
        logging.info("Resuming from step %d in %s", int(state.step), manager.directory)
    writer = summaries.EventWriter(workdir, just_logging=jax.process_index() != 0)
    run = Run(
        config=config,
        workdir=workdir,
        fold=fold,
        steps_per_epoch=steps_per_epoch,
        train_step=train_step,
        eval_step=eval_step,
        batch_sharding=batch_sharding,
        class_weights=weights,
        manager=manager,
        writer=writer,
        key=jax.random.key(config.seed),
    )
    return run, state, history


def _class_weights(
    config: ml_collections.ConfigDict, fold: pipeline.FoldInput
) -> tuple[float, ...] | None:
    """The training loss's class weights of `config.class_weights` (None: unweighted), logged."""
    if config.class_weights == "none":
        return None
    weights = balance.class_weights(
        [u["label"] for u in fold.utterances("train")], fold.class_names
    )
    logging.info(
        "Class weights of the training loss: %s",
        ", ".join(f"{name} {w:.3f}" for name, w in zip(fold.class_names, weights, strict=True)),
    )
    return weights


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    run, state, history = set_up(config, workdir)
    preemption = Preemption()
    # Inputs reach the devices only through the explicit `steps.global_batch`: an implicit host to
    # device copy inside the loop (a numpy array handed to a jitted step) is an error.
    with jax.transfer_guard_host_to_device("disallow"):
        first_epoch = int(state.step) // run.steps_per_epoch
        for epoch in range(first_epoch, config.num_epochs):
            trained = _train_epoch(run, state, epoch, history, preemption, epoch == first_epoch)
            if trained is None:
                return None
            state, train_metrics = trained
            end_epoch(run, state, epoch, train_metrics, history)
            # Asked at the epoch's end, after its validation and checkpoint: none is lost.
            if epoch + 1 < config.num_epochs and preemption.reached(int(state.step)):
                run.manager.wait_until_finished()
                logging.warning("Preempted: saved step %d; re-run to resume", int(state.step))
                return None
    run.manager.wait_until_finished()
    return final_results(run, state, history)


def _train_epoch(
    run: Run,
    state: steps.TrainState,
    epoch: int,
    history: list,
    preemption: Preemption,
    log_first_step: bool = False,
) -> tuple[steps.TrainState, dict[str, Any]] | None:
    """Trains to the end of `epoch` (from a resumed mid-epoch step too); with `log_first_step`,
    logs when its first step is done (compiled, or read from the compilation cache).

    Returns:
      The state and the epoch's train metrics (mean loss and accuracy, steps, last step,
      seconds), or None when preempted (after saving the state and `history`).
    """
    config, started = run.config, time.perf_counter()
    step = first = int(state.step)
    batches = run.fold.train_batches(
        config.batch_size,
        config.seed,
        epoch,
        jax.process_index(),
        jax.process_count(),
        config.data.sampling,
    )
    batches = itertools.islice(batches, step - epoch * run.steps_per_epoch, run.steps_per_epoch)
    # Fetched at the epoch's end (or on preemption): reading each step's loss would make the
    # host wait for the device at every step.
    pending = []
    for batch in batches:
        state, step_metrics = run.train_step(
            state, steps.global_batch(batch, TRAIN_KEYS, run.batch_sharding), run.key
        )
        step += 1
        pending.append({k: step_metrics[k] for k in ("loss", "accuracy")})
        if log_first_step and step == first + 1:
            compilation_cache.log_time_since_start("First train step", state.step)
        # The epoch's last step is asked in `_train`, once the epoch is validated and saved.
        if step < (epoch + 1) * run.steps_per_epoch and preemption.reached(step):
            fetch_train_metrics(pending, first, run.manager)  # a diverged state is not saved
            checkpoints.save(run.manager, step, state, history)
            run.manager.wait_until_finished()
            logging.warning("Preempted: saved step %d; re-run to resume", step)
            return None
    values = fetch_train_metrics(pending, first, run.manager)
    return state, {
        "loss": sum(v["loss"] for v in values) / len(values),
        "accuracy": sum(v["accuracy"] for v in values) / len(values),
        "steps": len(values),
        "step": step,
        "seconds": time.perf_counter() - started,
    }


def fetch_train_metrics(
    pending: list[dict[str, jax.Array]], first_step: int, manager
) -> list[dict[str, float]]:
    """The train metrics of steps `first_step + 1, ...` on the host.

    Raises:
      FloatingPointError: a step's loss is not finite (the error names the first such step).
    """
    values = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
    for step, step_values in enumerate(values, start=first_step + 1):
        if not np.isfinite(step_values["loss"]):
            latest = manager.latest_step()
            saved = (
                "no checkpoint was saved yet"
                if latest is None
                else f"the last good checkpoint is step {latest} in {manager.directory}"
            )
            raise FloatingPointError(
                f"non-finite training loss {step_values['loss']} at step {step}; {saved} (lower "
                "the learning rate, or set config.grad_clip_norm)"
            )
    return values


def end_epoch(
    run: Run, state: steps.TrainState, epoch: int, train: dict[str, Any], history: list
) -> None:
    """Validates the epoch's state, adds its record to `history`, saves and logs them."""
    validation = run.evaluate(state, "validation")
    step = train["step"]
    history.append(
        {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "validation_loss": validation["loss"],
            "validation_ua": validation["ua"],
            "validation_wa": validation["wa"],
            "validation_macro_f1": validation["macro_f1"],
            "train_seconds": (history[-1]["train_seconds"] if history else 0.0) + train["seconds"],
            "examples_per_second": train["steps"] * run.config.batch_size / train["seconds"],
        }
    )
    record = history[-1]
    run.writer.write_scalars(step, {k: v for k, v in record.items() if k not in ("epoch", "step")})
    run.writer.flush()
    checkpoints.save(run.manager, step, state, history, validation["ua"])
    logging.info(
        "epoch %d/%d  loss %.4f  val UA %.4f WA %.4f F1 %.4f  %.1f ex/s",
        epoch + 1,
        run.config.num_epochs,
        record["train_loss"],
        validation["ua"],
        validation["wa"],
        validation["macro_f1"],
        record["examples_per_second"],
    )


def final_results(
    run: Run, state: steps.TrainState, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """Restores the best-validation state, tests it once, writes results, predictions and
    pictures."""
    config, fold = run.config, run.fold
    best = checkpoints.best_record(history)
    best_state = checkpoints.restore_state(run.manager, best["step"], state)
    raw = {split: run.predict(best_state, split) for split in ("validation", "test")}
    temperature, fitted = 1.0, None
    if config.temperature_scaling:
        validation = raw["validation"][1]
        fitted = calibration.fit(validation.logits, validation.labels, best["step"])
        temperature = fitted["temperature"]
    scored = {
        split: evaluation.with_uncertainty(
            summary, predictions, config, temperature, corpora=bool(fold.corpora)
        )
        for split, (summary, predictions) in raw.items()
    }
    ids = {name: [u["id"] for u in fold.utterances(name)] for name in splits.SPLITS}
    results = {
        "dataset": config.data.dataset,
        "fold": config.data.fold,
        "class_names": list(fold.class_names),
        "best_epoch": best["epoch"],
        "best_step": best["step"],
        "train_seconds": history[-1]["train_seconds"],
        "examples_per_second": float(np.median([r["examples_per_second"] for r in history])),
        "speakers": fold.speakers,
        "evaluation": config.evaluation,
        "split_fingerprint": splits.split_fingerprint(ids),
        **fold.protocol,  # protocol, speaker_independent and the protocol's details
        "text_overlap": protocols.text_overlap(config.data.dataset, ids),
        "bootstrap": {"resamples": config.bootstrap_resamples, "seed": config.seed},
        "temperature": temperature,
        **{split: summary for split, (summary, _) in scored.items()},
    }
    if jax.process_index() == 0:
        if fitted is not None:
            calibration.save(run.workdir, fitted)
        for split, (_, predictions) in scored.items():
            evaluation.write_predictions(run.workdir, split, predictions)
        # The pictures of a speaker-dependent split say so, as they are shown without the JSON.
        dependent = "" if results["speaker_independent"] else ", speaker-dependent split"
        title = f"{config.data.dataset} fold {config.data.fold}{dependent}, test"
        report.write_results(run.workdir, results, history, title)
        print(report.format_table(results))
    return results
