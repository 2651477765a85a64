r"""Compares the test UA of two models on the same test utterances, with a test of the difference.

  python -m emohrnet_jax.compare runs/demo runs/baseline
  python -m emohrnet_jax.compare runs/cv_small runs/cv_tiny --json=comparison.json --resamples=5000

Each argument is a run folder (its `results.json` and `predictions_test.jsonl`, one JSON object
per test utterance: `id`, `speaker`, `label` (an index into `class_names`), `probabilities`) or
a cross-validation folder, whose `fold_K/` run folders' test utterances are pooled. Either may be
a gs:// URL. The two must hold the same test utterances with the same labels and class names;
otherwise the command says what differs and exits with status 1.

A cross-validation over seeds (`seed_S/fold_K/`, `tools/cross_validate.py --seeds`) is compared
by its UA averaged over seeds: both sides need the same number of seeds, A's i-th seed (in
increasing order) is paired with B's i-th, the same speakers are drawn for every pair and a
permutation swaps a speaker's predictions in every pair together. Every seed must hold the same
test utterances. A run folder or a cross-validation without seeds counts as one seed.

Reported: UA of each (prediction = the most probable class), UA(A) - UA(B) with a 95% interval
from resampling test speakers (the same speakers for both) and the p-value of a paired
permutation test that swaps the two systems' predictions per speaker
(emohrnet_jax.statistics.paired_comparison). `--json` writes them with the counts, resamples
and seed.
"""

import dataclasses
import json
import os
import re

import numpy as np
from absl import app, flags

from emohrnet_jax import cli, paths, statistics, storage

PREDICTIONS = "predictions_test.jsonl"
RESULTS = "results.json"
_FOLD = re.compile(r"^fold_(\d+)$")
_SEED = re.compile(r"^seed_(\d+)$")


@dataclasses.dataclass(frozen=True)
class TestPredictions:
    """One system's test predictions, one entry per utterance."""

    class_names: tuple[str, ...]
    ids: tuple[str, ...]
    speakers: tuple[str, ...]
    labels: np.ndarray  # (N,) true class indices.
    probabilities: np.ndarray  # (N, classes).


def _run_predictions(folder: str) -> TestPredictions:
    """The test predictions of the run folder `folder`."""
    results = os.path.join(folder, RESULTS)
    predictions = os.path.join(folder, PREDICTIONS)
    for name in (results, predictions):
        if not storage.exists(name):
            raise ValueError(f"{name} is missing (a run folder holds {RESULTS} and {PREDICTIONS})")
    class_names = tuple(storage.read_json(results)["class_names"])
    rows = []
    for number, line in enumerate(storage.read_text(predictions).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            probabilities = [float(p) for p in row["probabilities"]]
            rows.append((str(row["id"]), str(row["speaker"]), int(row["label"]), probabilities))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{predictions}:{number}: not a prediction ({error!r})") from None
        if len(probabilities) != len(class_names):
            raise ValueError(
                f"{predictions}:{number}: {len(probabilities)} probabilities for "
                f"{len(class_names)} classes"
            )
    if not rows:
        raise ValueError(f"{predictions} holds no predictions")
    ids, speakers, labels, probabilities = zip(*rows, strict=True)
    return TestPredictions(
        class_names, ids, speakers, np.array(labels), np.array(probabilities, np.float64)
    )


def _numbered_folders(folder: str, pattern: re.Pattern, done) -> list[str]:
    """The children of `folder` whose names match `pattern` and that `done` accepts, by number."""
    found = []
    if storage.isdir(folder):
        for child in storage.path(folder).iterdir():
            match = pattern.match(child.name)
            if match and done(os.path.join(folder, child.name)):
                found.append((int(match.group(1)), os.path.join(folder, child.name)))
    return [path for _, path in sorted(found)]


def _fold_folders(folder: str) -> list[str]:
    """The `fold_K` run folders of a cross-validation folder, by fold number."""
    return _numbered_folders(
        folder, _FOLD, lambda child: storage.exists(os.path.join(child, RESULTS))
    )


def _seed_folders(folder: str) -> list[str]:
    """The `seed_S` cross-validation folders of a cross-validation over seeds, by seed."""
    return _numbered_folders(folder, _SEED, lambda child: bool(_fold_folders(child)))


def load(folder: str) -> TestPredictions:
    """The test predictions of a run folder, or of a cross-validation folder's folds pooled.

    Raises:
      ValueError: no such run, a missing predictions file, folds that disagree on class names
        or share test utterances.
    """
    if storage.exists(os.path.join(folder, RESULTS)):
        return _run_predictions(folder)
    folds = [_run_predictions(fold) for fold in _fold_folders(folder)]
    if not folds:
        raise ValueError(
            f"{folder} is neither a run folder (no {RESULTS}) nor a cross-validation folder "
            f"(no fold_K/{RESULTS} or seed_S/fold_K/{RESULTS})"
        )
    if any(fold.class_names != folds[0].class_names for fold in folds):
        raise ValueError(f"the folds of {folder} have different class names")
    ids = sum((fold.ids for fold in folds), ())
    if len(set(ids)) != len(ids):
        raise ValueError(f"the folds of {folder} share test utterances: they cannot be pooled")
    return TestPredictions(
        folds[0].class_names,
        ids,
        sum((fold.speakers for fold in folds), ()),
        np.concatenate([fold.labels for fold in folds]),
        np.concatenate([fold.probabilities for fold in folds]),
    )


def load_seeds(folder: str) -> list[TestPredictions]:
    """Each seed's test predictions (by seed) of a cross-validation over seeds, in the order of
    the first seed's utterances; `[load(folder)]` for a run or a cross-validation without seeds.

    Raises:
      ValueError: as `load`, a folder holding both fold_K and seed_S folders, or seeds whose
        test utterances differ.
    """
    seeds = [] if storage.exists(os.path.join(folder, RESULTS)) else _seed_folders(folder)
    if not seeds:
        return [load(folder)]
    if _fold_folders(folder):
        raise ValueError(f"{folder} holds both fold_K and seed_S folders: compare one of them")
    first = load(seeds[0])
    loaded = [first]
    for seed in seeds[1:]:
        try:
            loaded.append(_aligned(first, load(seed)))
        except ValueError as error:
            raise ValueError(f"{seed} and {seeds[0]}: {error}") from None
    return loaded


def _aligned(a: TestPredictions, b: TestPredictions) -> TestPredictions:
    """`b` in the order of `a`'s utterances; ValueError when the two test sets differ."""
    if a.class_names != b.class_names:
        raise ValueError(f"class names differ: {list(a.class_names)} and {list(b.class_names)}")
    differing = sorted(set(a.ids) ^ set(b.ids))
    if differing or len(a.ids) != len(b.ids):
        example = f", e.g. {differing[0]!r}" if differing else ""
        raise ValueError(
            f"the test utterances differ: {len(differing)} ids are in one run only{example} "
            f"({len(a.ids)} and {len(b.ids)} utterances)"
        )
    position = {id_: i for i, id_ in enumerate(b.ids)}
    order = np.array([position[id_] for id_ in a.ids])
    aligned = TestPredictions(
        b.class_names,
        a.ids,
        tuple(np.asarray(b.speakers)[order]),
        b.labels[order],
        b.probabilities[order],
    )
    for what, left, right in (
        ("labels", a.labels, aligned.labels),
        ("speakers", np.asarray(a.speakers), np.asarray(aligned.speakers)),
    ):
        wrong = np.flatnonzero(left != right)
        if len(wrong):
            raise ValueError(
                f"the {what} of {len(wrong)} test utterances differ, e.g. {a.ids[wrong[0]]!r}: "
                f"{left[wrong[0]]} and {right[wrong[0]]}"
            )
    return aligned


def compare(run_a: str, run_b: str, resamples: int = 1000, seed: int = 0) -> dict:
    """UA of each run and the paired comparison of A against B (see the module); with seeds,
    UA averaged over seeds.

    Raises:
      ValueError: a run that cannot be read, runs whose test utterances, labels or class
        names differ, or cross-validations of different numbers of seeds.
    """
    seeds_a, seeds_b = load_seeds(run_a), load_seeds(run_b)
    if len(seeds_a) != len(seeds_b):
        raise ValueError(
            f"{run_a} has {len(seeds_a)} seeds and {run_b} {len(seeds_b)}: compare "
            "cross-validations of the same number of seeds"
        )
    a = seeds_a[0]
    b = [_aligned(a, other) for other in seeds_b]
    num_classes = len(a.class_names)
    predictions_a = np.stack([s.probabilities.argmax(axis=1) for s in seeds_a])
    predictions_b = np.stack([s.probabilities.argmax(axis=1) for s in b])
    # One seed: (N,) predictions, exactly today's comparison.
    if len(seeds_a) == 1:
        predictions_a, predictions_b = predictions_a[0], predictions_b[0]
    result = statistics.paired_comparison(
        a.labels, predictions_a, predictions_b, a.speakers, num_classes, resamples, seed
    )

    def mean_ua(predictions: np.ndarray) -> float:
        """The UA averaged over seeds."""
        rows = np.atleast_2d(predictions)
        return float(np.mean([statistics.scores(a.labels, p, num_classes)["ua"] for p in rows]))

    return {
        "run_a": run_a,
        "run_b": run_b,
        "ua_a": mean_ua(predictions_a),
        "ua_b": mean_ua(predictions_b),
        **result,
        "num_seeds": len(seeds_a),
    }


def table(result: dict) -> str:
    """The console summary of `compare`'s result."""
    low, high = result["ua_difference_ci95"]
    # The unswapped and the all-swapped resamples are always as extreme as the observed one.
    floor = 2.0 ** (1 - result["num_speakers"])
    note = f"; with so few speakers p cannot fall below ~{floor:.2g}" if floor > 0.01 else ""
    num_seeds = result.get("num_seeds", 1)
    seeds = f", UA averaged over {num_seeds} seeds" if num_seeds > 1 else ""
    return "\n".join(
        [
            f"A  {result['ua_a']:.4f}  UA  {result['run_a']}",
            f"B  {result['ua_b']:.4f}  UA  {result['run_b']}",
            f"A - B  {result['ua_difference']:+.4f}  95% CI [{low:+.4f}, {high:+.4f}]  "
            f"p = {result['p_value']:.4g}",
            f"({result['num_utterances']} test utterances of {result['num_speakers']} speakers"
            f"{seeds}; {result['resamples']} resamples, seed {result['seed']}{note})",
        ]
    )


def _define_flags() -> None:
    flags.DEFINE_string("json", None, "Also write the result as JSON here (a path or gs:// URL).")
    flags.DEFINE_integer("resamples", 1000, "Bootstrap and permutation resamples.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the resampling.")


def main(argv: list[str]) -> None:
    """The command line: compares the runs `argv[1]` and `argv[2]`."""
    if len(argv) != 3:
        raise app.UsageError("name two runs: RUN_A RUN_B")
    options = flags.FLAGS
    storage.configure()
    try:
        run_a, run_b = (paths.location(run, "run") for run in argv[1:])
        output = paths.location(options.json, "--json")
        result = compare(run_a, run_b, options.resamples, options.seed)
        if output:
            storage.write_json_atomically(output, result)
    except cli.USER_ERRORS as error:
        cli.exit_with(error, "compare")
    print(table(result))


def run() -> None:
    """The command line (also installed as `emohrnet-compare`)."""
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
