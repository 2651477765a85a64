"""`--mode=evaluate`: a finished run's best-validation state scored again, on a split of its
corpus or on another corpus (cross-corpus), with the run's windows and temperature."""

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from emohrnet_jax import (
    calibration,
    checkpoints,
    config_check,
    evaluation,
    metrics,
    normalization,
    report,
    steps,
    storage,
    train,
    windows,
)


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
    if not storage.isdir(workdir):  # holding the lock would create it
        raise FileNotFoundError(f"no run in {workdir}: train this run first")
    with train.holding(workdir):
        return _evaluate_run(config, workdir, split)


def _evaluate_run(config: ml_collections.ConfigDict, workdir: str, split: str) -> dict[str, Any]:
    target = evaluation.target(config, split)
    fold = dataclasses.replace(target.fold, normalization=normalization.load(config, workdir))
    mesh, replicated, batch_sharding = steps.shardings()
    # The optimizer state's structure, not its schedule's length, must match the checkpoint.
    state = jax.device_put(steps.create_train_state(config, steps_per_epoch=1), replicated)
    state, best = checkpoints.restore_best(workdir, state)
    eval_step = steps.jit_eval_step(config, mesh, len(fold.class_names), target.classes)
    windowing = windows.Windowing.from_config(config)
    result, predictions = evaluation.evaluate_with_predictions(
        eval_step, state, fold, split, config.batch_size, batch_sharding, windowing
    )
    if target.classes is not None:
        kept = np.ix_(target.classes, target.classes)
        confusion = np.array(result["confusion_matrix"])[kept]
        names = [fold.class_names[i] for i in target.classes]
        result.update(metrics.summarize(confusion, names), **target.corpus)
    temperature = calibration.load_temperature(workdir, best["step"])
    corpora = bool(fold.corpora)
    result, _ = evaluation.with_uncertainty(result, predictions, config, temperature, corpora)
    result.update(evaluation=config.evaluation, temperature=temperature)
    result.update(split=split, best_epoch=best["epoch"], speakers=fold.speakers[split])
    if jax.process_index() == 0:
        report.write_evaluation(workdir, target.name, result)
        print(report.format_evaluation(target.name, result))
    return result
