"""Cross-validation: every speaker-independent fold of a corpus's protocol, and their summary.

Fold k trains in `WORKDIR/fold_k` exactly as `python -m emohrnet_jax.main --config.data.fold=k`
would. A fold with a `results.json` is done and is not re-run; an interrupted fold resumes from
its latest checkpoint. A fold folder saved under another config (beyond the fields that may change
on a resume, emohrnet_jax.run_config.SAFE_FIELDS) is refused, so a summary never mixes configs.
The summary holds per-fold and mean +- std UA, WA and macro-F1 on each fold's test speakers (the
sample standard deviation, ddof=1, that papers usually report) and the summed test confusion
matrix, with the speaker-bootstrap 95% intervals of the pooled test predictions (`ci95`).
`tools/cross_validate.py` is its command line.
"""

import os
from typing import Any

import ml_collections
import numpy as np

from emohrnet_jax import evaluation, locks, metrics, plots, run_config, statistics, storage, train
from emohrnet_jax.data import splits

METRICS = ("ua", "wa", "macro_f1")


def fold_workdir(workdir: str, fold: int) -> str:
    """The folder of fold `fold` in the cross-validation `workdir`."""
    return os.path.join(workdir, f"fold_{fold}")


def run_folds(
    config: ml_collections.ConfigDict, workdir: str, folds: list[int] | None = None
) -> dict[str, Any] | None:
    """Trains the folds not yet done (all of the protocol's by default), then summarizes all.

    Returns None when preempted (SIGTERM) after saving the fold in progress.

    Raises:
      run_config.RunConfigError: a fold folder holds a run of another config.
      locks.LockedError: another process is using `workdir` (or a fold's folder).
    """
    total = splits.num_folds(config.data.dataset, config.data.get("num_folds"))
    folds = list(range(total)) if folds is None else folds
    bad = [fold for fold in folds if not 0 <= fold < total]
    if bad:
        raise ValueError(f"folds {bad} are out of range: {config.data.dataset} has {total} folds")
    with locks.hold(workdir, "the cross-validation workdir"):
        results = []
        for fold in folds:
            result = _fold_result(config, workdir, fold, total)
            if result is None:  # preempted: the next fold must not start
                return None
            results.append(result)
        return _write_summary(results, total, workdir)


def _fold_result(config, workdir: str, fold: int, total: int) -> dict[str, Any] | None:
    """The fold's results: read back when done under the same config, else trained (resumed)."""
    fold_config = config.copy_and_resolve_references()
    with fold_config.unlocked():
        fold_config.data.fold = fold
    # Before reading results.json, so that a fold of an older config is never summarized.
    run_config.check_config(fold_workdir(workdir, fold), fold_config)
    path = os.path.join(fold_workdir(workdir, fold), "results.json")
    if storage.exists(path):
        print(f"fold {fold}: done, read from {path}")
        return storage.read_json(path)
    print(f"fold {fold} of {total}: training in {fold_workdir(workdir, fold)}")
    return train.train_and_evaluate(fold_config, fold_workdir(workdir, fold))


def _write_summary(results: list[dict[str, Any]], total: int, workdir: str) -> dict[str, Any]:
    """Writes `summary.json` and the summed confusion matrix's PNG; returns the summary."""
    predictions = [_test_predictions(workdir, r) for r in results]
    summary = summarize(results, total, None if None in predictions else predictions)
    storage.write_json_atomically(os.path.join(workdir, "summary.json"), summary)
    plots.plot_confusion_matrix(
        np.array(summary["confusion_matrix"]),
        summary["class_names"],
        os.path.join(workdir, "confusion_matrix.png"),
        title=f"{summary['dataset']}: {len(results)} folds, test (summed)",
    )
    return summary


def _test_predictions(workdir: str, result: dict[str, Any]) -> evaluation.Predictions | None:
    """A fold's test predictions; None for a fold trained before runs kept them."""
    folder = fold_workdir(workdir, result["fold"])
    if "bootstrap" not in result or not storage.exists(evaluation.predictions_path(folder, "test")):
        return None
    return evaluation.read_predictions(folder, "test")


def pooled_interval(
    test_predictions: list[evaluation.Predictions], resamples: int, seed: int
) -> dict[str, list[float]]:
    """The speaker-bootstrap 95% intervals of UA, WA and macro-F1 over the folds' test
    utterances pooled (each speaker is tested in one fold, so all speakers are resampled)."""
    labels = np.concatenate([p.labels for p in test_predictions])
    predicted = np.concatenate([p.probabilities.argmax(axis=1) for p in test_predictions])
    speakers = [s for p in test_predictions for s in p.speakers]
    num_classes = test_predictions[0].probabilities.shape[1]
    return statistics.speaker_bootstrap(
        labels, predicted, speakers, num_classes, resamples=resamples, seed=seed
    )


def summarize(
    results: list[dict[str, Any]],
    num_folds: int,
    test_predictions: list[evaluation.Predictions] | None = None,
) -> dict[str, Any]:
    """Per-fold and mean +- std test metrics, the summed test confusion matrix, and the pooled
    test predictions' `ci95` (`pooled_interval`, with the first fold's bootstrap settings; None
    without `test_predictions`)."""
    names = results[0]["class_names"]
    per_fold = [
        {
            "fold": r["fold"],
            "best_epoch": r["best_epoch"],
            "test_speakers": r["speakers"]["test"],
            **{m: r["test"][m] for m in METRICS},
            "num_examples": r["test"]["num_examples"],
        }
        for r in results
    ]
    values = {m: np.array([f[m] for f in per_fold]) for m in METRICS}
    confusion = np.sum([r["test"]["confusion_matrix"] for r in results], axis=0)
    bootstrap = results[0].get("bootstrap")
    ci95 = None
    if test_predictions is not None:
        ci95 = pooled_interval(test_predictions, bootstrap["resamples"], bootstrap["seed"])
    return {
        "dataset": results[0]["dataset"],
        "class_names": names,
        "num_folds": num_folds,
        "folds_done": len(results),
        "folds": per_fold,
        "mean": {m: float(v.mean()) for m, v in values.items()},
        "std": {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()},
        "ci95": ci95,
        "bootstrap": bootstrap if ci95 is not None else None,
        "confusion_matrix": confusion.tolist(),
        "pooled": metrics.summarize(confusion, names),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The console table: one row per fold, then mean +- std, in percent."""
    row = "{:<6}  {:>14}  {:>14}  {:>14}  {:>6}"
    lines = [row.format("fold", "UA %", "WA %", "macro-F1 %", "N")]
    for fold in summary["folds"]:
        cells = [f"{100 * fold[m]:.2f}" for m in METRICS]
        lines.append(row.format(fold["fold"], *cells, fold["num_examples"]))
    cells = [f"{100 * summary['mean'][m]:.2f} +- {100 * summary['std'][m]:.2f}" for m in METRICS]
    lines.append(row.format("mean", *cells, summary["pooled"]["num_examples"]))
    if summary.get("ci95"):
        low, high = summary["ci95"]["ua"]
        lines.append(
            f"pooled UA {100 * summary['pooled']['ua']:.2f}  95% CI [{100 * low:.2f}, "
            f"{100 * high:.2f}] (speakers resampled)"
        )
    if summary["folds_done"] < summary["num_folds"]:
        lines.append(f"({summary['folds_done']} of {summary['num_folds']} folds)")
    return "\n".join(lines)
