"""Cross-validation: every speaker-independent fold of a corpus's protocol, and their summary.

Fold k trains in `WORKDIR/fold_k` exactly as `python -m emohrnet_jax.main --config.data.fold=k`
would. A fold with a `results.json` is done and is not re-run; an interrupted fold resumes from
its latest checkpoint. A fold folder saved under another config (beyond the fields that may change
on a resume, emohrnet_jax.run_config.SAFE_FIELDS) is refused, so a summary never mixes configs.
The summary holds per-fold and mean +- std UA, WA and macro-F1 on each fold's test speakers (the
sample standard deviation, ddof=1, that papers usually report) and the summed test confusion
matrix, with the speaker-bootstrap 95% intervals of the pooled test predictions (`ci95`).

With seeds, each fold x seed is a run with `config.seed` set to the seed, in
`WORKDIR/seed_S/fold_k`: each `seed_S` is an ordinary cross-validation folder (with its own
summary). `WORKDIR/summary.json` then holds every run (fold and seed), mean +- std over all of
them, each seed's mean, and a pooled `ci95` of the UA averaged over seeds (speakers resampled,
the same for every seed). `tools/cross_validate.py` is its command line.
"""

import collections
import os
from typing import Any

import ml_collections
import numpy as np

from emohrnet_jax import (
    evaluation,
    locks,
    members,
    metrics,
    plots,
    run_config,
    statistics,
    storage,
    train,
)
from emohrnet_jax.data import protocols

METRICS = ("ua", "wa", "macro_f1")


def fold_workdir(workdir: str, fold: int) -> str:
    """The folder of fold `fold` in the cross-validation `workdir`."""
    return os.path.join(workdir, f"fold_{fold}")


def seed_workdir(workdir: str, seed: int) -> str:
    """The cross-validation folder of seed `seed` in a cross-validation over seeds."""
    return os.path.join(workdir, f"seed_{seed}")


def run_folds(
    config: ml_collections.ConfigDict,
    workdir: str,
    folds: list[int] | None = None,
    seeds: list[int] | None = None,
    members_per_program: int = 1,
    steps_per_dispatch: int = 1,
) -> dict[str, Any] | None:
    """Trains the folds not yet done (all of the protocol's by default), then summarizes all.

    With `seeds`, every fold is trained once per seed (`config.seed` = the seed) in
    `seed_workdir(workdir, seed)`, seeds in increasing order, and the summary covers every run.
    With `members_per_program` > 1 (or `steps_per_dispatch` > 1) the runs not yet done train that
    many at a time in one program (emohrnet_jax.members; memory in `workdir/members.json`), each
    in its folder as alone. Returns None when preempted (SIGTERM) after saving the runs in progress.

    Raises:
      run_config.RunConfigError: a fold folder holds a run of another config.
      locks.LockedError: another process is using `workdir` (or a fold's folder).
    """
    total = protocols.num_folds(config.data)
    folds = list(range(total)) if folds is None else folds
    bad = [fold for fold in folds if not 0 <= fold < total]
    if bad:
        raise ValueError(f"folds {bad} are out of range: {config.data.dataset} has {total} folds")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    with locks.hold(workdir, "the cross-validation workdir"):
        if members_per_program > 1 or steps_per_dispatch > 1:
            pending = _pending_runs(config, workdir, folds, seeds)
            report = os.path.join(workdir, "members.json")
            if not members.train_groups(pending, members_per_program, steps_per_dispatch, report):
                return None
        if seeds is None:
            results = _run_folds(config, workdir, folds, total)
            return None if results is None else _write_summary(results, total, workdir)
        runs, run_seeds = [], []
        for seed in sorted(seeds):
            seed_config = config.copy_and_resolve_references()
            with seed_config.unlocked():
                seed_config.seed = seed
            print(f"seed {seed}:")
            results = _run_folds(seed_config, seed_workdir(workdir, seed), folds, total)
            if results is None:  # preempted: the next seed must not start
                return None
            _write_summary(results, total, seed_workdir(workdir, seed))
            runs += results
            run_seeds += [seed] * len(results)
        return _write_summary(runs, total, workdir, run_seeds)


def _pending_runs(config, workdir: str, folds: list[int], seeds: list[int] | None) -> list:
    """(config, folder) of each run (seed-major, as trained one by one) without results."""
    pending = []
    for seed in [None] if seeds is None else sorted(seeds):
        for fold in folds:
            run = config.copy_and_resolve_references()
            with run.unlocked():
                run.data.fold = fold
                run.seed = run.seed if seed is None else seed
            folder = fold_workdir(workdir if seed is None else seed_workdir(workdir, seed), fold)
            run_config.check_config(folder, run)
            if not storage.exists(os.path.join(folder, "results.json")):
                pending.append((run, folder))
    return pending


def _run_folds(config, workdir: str, folds: list[int], total: int) -> list[dict] | None:
    """The results of `folds` in the cross-validation folder `workdir`; None when preempted."""
    results = []
    for fold in folds:
        result = _fold_result(config, workdir, fold, total)
        if result is None:  # preempted: the next fold must not start
            return None
        results.append(result)
    return results


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


def _write_summary(
    results: list[dict[str, Any]],
    total: int,
    workdir: str,
    run_seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Writes `summary.json`, the summed confusion matrix's PNG and `ua_by_fold.png`; returns
    the summary."""
    folders = [
        fold_workdir(workdir if seed is None else seed_workdir(workdir, seed), r["fold"])
        for r, seed in zip(results, run_seeds or [None] * len(results), strict=True)
    ]
    predictions = [_test_predictions(folder, r) for folder, r in zip(folders, results, strict=True)]
    summary = summarize(results, total, None if None in predictions else predictions, run_seeds)
    storage.write_json_atomically(os.path.join(workdir, "summary.json"), summary)
    runs = f"{summary['folds_done']} folds"
    if run_seeds:
        runs += f" x {len(summary['seeds'])} seeds"
    plots.plot_confusion_matrix(
        np.array(summary["confusion_matrix"]),
        summary["class_names"],
        os.path.join(workdir, "confusion_matrix.png"),
        title=f"{summary['dataset']}: {runs}, test (summed)",
    )
    plots.plot_ua_by_fold(
        summary["folds"],
        summary["mean"]["ua"],
        summary["ci95"]["ua"] if summary["ci95"] else None,
        os.path.join(workdir, "ua_by_fold.png"),
        title=f"{summary['dataset']}: test UA of {runs}",
    )
    return summary


def _test_predictions(folder: str, result: dict[str, Any]) -> evaluation.Predictions | None:
    """A run's test predictions; None for a run trained before runs kept them."""
    if "bootstrap" not in result or not storage.exists(evaluation.predictions_path(folder, "test")):
        return None
    return evaluation.read_predictions(folder, "test")


def _pooled(test_predictions: list[evaluation.Predictions]) -> tuple:
    """(ids, labels, predicted classes, speakers) of the folds' test utterances pooled."""
    utterances = [u for p in test_predictions for u in p.utterances]
    return (
        [u["id"] for u in utterances],
        np.array([u["label"] for u in utterances], np.int64),
        np.concatenate([p.probabilities.argmax(axis=1) for p in test_predictions]),
        np.array([u["speaker"] for u in utterances]).astype(str),
    )


def pooled_interval(
    by_seed: list[list[evaluation.Predictions]], resamples: int, seed: int
) -> dict[str, list[float]]:
    """The speaker-bootstrap 95% intervals of UA, WA and macro-F1 over the folds' test
    utterances pooled (each speaker is tested in one fold, so all speakers are resampled).

    `by_seed` holds each seed's folds' test predictions (one list without seeds); with several
    seeds a resample's score is the mean over seeds of each seed's pooled score on the same
    drawn speakers.

    Raises:
      ValueError: seeds whose pooled test utterances (ids, labels or speakers) differ.
    """
    ids, labels, predicted, speakers = _pooled(by_seed[0])
    rows = [predicted]
    for other in by_seed[1:]:
        other_ids, other_labels, other_predicted, other_speakers = _pooled(other)
        position = {id_: i for i, id_ in enumerate(other_ids)}
        if len(other_ids) != len(ids) or position.keys() != set(ids):
            raise ValueError("the seeds' runs differ in their test utterances: cannot pool them")
        order = np.array([position[id_] for id_ in ids])
        if not (
            np.array_equal(other_labels[order], labels)
            and np.array_equal(other_speakers[order], speakers)
        ):
            raise ValueError("the seeds' runs differ in their test labels or speakers")
        rows.append(other_predicted[order])
    num_classes = by_seed[0][0].probabilities.shape[1]
    predictions = rows[0] if len(rows) == 1 else np.stack(rows)
    return statistics.speaker_bootstrap(
        labels, predictions, speakers, num_classes, resamples=resamples, seed=seed
    )


def _run_entry(result: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """One run's row of the summary: its fold (and seed), test scores and test UA interval."""
    return {
        "fold": result["fold"],
        **({} if seed is None else {"seed": seed}),
        "best_epoch": result["best_epoch"],
        "test_speakers": result["speakers"]["test"],
        **{m: result["test"][m] for m in METRICS},
        "ua_ci95": result["test"].get("ci95", {}).get("ua"),
        "num_examples": result["test"]["num_examples"],
        # Runs trained before these fields existed have none: null.
        **{key: result["test"].get(key) for key in ("ece", "brier")},
        "split_fingerprint": result.get("split_fingerprint"),
    }


def pooled_speakers_and_calibration(
    by_seed: list[list[evaluation.Predictions]],
) -> dict[str, Any]:
    """Each test speaker's UA, the worst speaker, and the ECE and Brier score of the folds' test
    predictions pooled; with several seeds (`by_seed`, as `pooled_interval`'s) each is the mean
    over seeds."""
    per_speaker, calibration = [], []
    for runs in by_seed:
        labels = np.concatenate([p.labels for p in runs])
        probabilities = np.concatenate([p.probabilities for p in runs])
        speakers = [s for p in runs for s in p.speakers]
        num_classes = probabilities.shape[1]
        predicted = probabilities.argmax(axis=1)
        per_speaker.append(statistics.per_speaker_ua(labels, predicted, speakers, num_classes))
        calibration.append(statistics.calibration(labels, probabilities))
    ua = {s: float(np.mean([seed[s] for seed in per_speaker])) for s in sorted(per_speaker[0])}
    worst = min(ua, key=lambda speaker: (ua[speaker], speaker))
    return {
        "per_speaker_ua": ua,
        "worst_speaker": {"speaker": worst, "ua": ua[worst]},
        **{key: float(np.mean([c[key] for c in calibration])) for key in ("ece", "brier")},
    }


def _mean_std(entries: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for one run) of each metric."""
    values = {m: np.array([e[m] for e in entries]) for m in METRICS}
    mean = {m: float(v.mean()) for m, v in values.items()}
    return mean, {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}


def summarize(
    results: list[dict[str, Any]],
    num_folds: int,
    test_predictions: list[evaluation.Predictions] | None = None,
    run_seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Per-run and mean +- std test metrics, the summed test confusion matrix, and the pooled
    test predictions' `ci95` (`pooled_interval`, with the first run's bootstrap settings; None
    without `test_predictions`), per-speaker UA, worst speaker, ECE and Brier
    (`pooled_speakers_and_calibration`; absent without `test_predictions`).

    With `run_seeds` (the seed of each run), every run is an entry of `folds` naming its fold
    and seed, mean and std are over all runs, `seeds` lists the seeds and `per_seed` each
    seed's mean; `ci95` is that of the UA (WA, macro-F1) averaged over seeds.
    """
    names = results[0]["class_names"]
    seeds = run_seeds or [None] * len(results)
    entries = [_run_entry(r, seed) for r, seed in zip(results, seeds, strict=True)]
    mean, std = _mean_std(entries)
    confusion = np.sum([r["test"]["confusion_matrix"] for r in results], axis=0)
    bootstrap = results[0].get("bootstrap")
    distinct = sorted(set(seeds)) if run_seeds else [None]
    ci95, pooled_uncertainty = None, {}
    if test_predictions is not None:
        by_seed = [
            [p for p, s in zip(test_predictions, seeds, strict=True) if s == d] for d in distinct
        ]
        ci95 = pooled_interval(by_seed, bootstrap["resamples"], bootstrap["seed"])
        pooled_uncertainty = pooled_speakers_and_calibration(by_seed)
    summary = {
        "dataset": results[0]["dataset"],
        "class_names": names,
        "num_folds": num_folds,
        "folds_done": len({r["fold"] for r in results}),
        "folds": entries,
        "mean": mean,
        "std": std,
        "ci95": ci95,
        "bootstrap": bootstrap if ci95 is not None else None,
        "confusion_matrix": confusion.tolist(),
        "pooled": metrics.summarize(confusion, names),
        **pooled_uncertainty,
    }
    per_corpus = _per_corpus(results, names)
    if per_corpus:
        summary["per_corpus"] = per_corpus
    if run_seeds:
        summary["seeds"] = distinct
        summary["per_seed"] = [
            {"seed": d, "mean": _mean_std([e for e in entries if e["seed"] == d])[0]}
            for d in distinct
        ]
    return summary


def _per_corpus(results: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """A mixture's test scores corpus by corpus: the confusion of each corpus summed over the
    runs that test on it, summarized, with those runs' count and mean UA ({} for one corpus)."""
    tested = collections.defaultdict(list)
    for result in results:
        for corpus, scores in result["test"].get("per_corpus", {}).items():
            tested[corpus].append(scores)
    return {
        corpus: metrics.summarize(np.sum([s["confusion_matrix"] for s in runs], axis=0), names)
        | {"runs": len(runs), "mean_ua": float(np.mean([s["ua"] for s in runs]))}
        for corpus, runs in tested.items()
    }


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _interval(ci: list[float] | None) -> str:
    return "" if ci is None else f"[{_percent(ci[0])}, {_percent(ci[1])}]"


def format_summary(summary: dict[str, Any]) -> str:
    """The console table: one row per run (fold, and seed) with its test UA's 95% interval,
    then mean +- std (and each seed's mean UA) and the pooled interval, in percent."""
    seeds = summary.get("seeds")
    row = "{:<6}  " + ("{:>4}  " if seeds else "{}") + "{:>14}  {:>16}  {:>14}  {:>14}  {:>6}"
    lines = [
        row.format("fold", "seed" if seeds else "", "UA %", "UA 95% CI", "WA %", "macro-F1 %", "N")
    ]
    for run in summary["folds"]:
        cells = [_percent(run[m]) for m in METRICS]
        lines.append(
            row.format(
                run["fold"],
                run.get("seed", ""),
                cells[0],
                _interval(run.get("ua_ci95")),
                *cells[1:],
                run["num_examples"],
            )
        )
    cells = [f"{_percent(summary['mean'][m])} +- {_percent(summary['std'][m])}" for m in METRICS]
    lines.append(
        row.format("mean", "", cells[0], "", *cells[1:], summary["pooled"]["num_examples"])
    )
    if seeds:
        means = [f"seed {s['seed']} {_percent(s['mean']['ua'])}" for s in summary["per_seed"]]
        lines.append("mean UA per seed: " + ", ".join(means))
    if summary.get("ci95"):
        over = f"; UA averaged over {len(seeds)} seeds" if seeds else ""
        lines.append(
            f"pooled UA {_percent(summary['pooled']['ua'])}  95% CI "
            f"{_interval(summary['ci95']['ua'])} (speakers resampled{over})"
        )
    for corpus, scores in summary.get("per_corpus", {}).items():
        lines.append(
            f"corpus {corpus}: pooled UA {_percent(scores['ua'])}, mean UA "
            f"{_percent(scores['mean_ua'])} over {scores['runs']} runs, N {scores['num_examples']}"
        )
    if summary["folds_done"] < summary["num_folds"]:
        lines.append(f"({summary['folds_done']} of {summary['num_folds']} folds)")
    return "\n".join(lines)
