"""Tests of `python -m emohrnet_jax.compare` on run folders the tests write, and the baseline's."""

import json
import subprocess
import sys

import numpy as np
import pytest

from emohrnet_jax import compare
from tests import helpers

NAMES = ["angry", "happy", "neutral", "sad"]
# 12 speakers x 4 utterances: the permutation test's 2^12 swaps allow a p well under 0.01.
LABELS = np.tile(np.arange(4), 12)
SPEAKERS = np.repeat([f"spk{i:02d}" for i in range(12)], 4)
IDS = [f"utt{i:02d}" for i in range(len(LABELS))]


def _probabilities(predicted):
    """Probability rows whose argmax is `predicted`."""
    rows = np.full((len(predicted), len(NAMES)), 0.1)
    rows[np.arange(len(predicted)), predicted] = 0.7
    return rows


def _write_run(folder, predicted, rows=None, class_names=NAMES):
    """A run folder: results.json with `class_names`, predictions_test.jsonl of `rows` (all)."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"class_names": class_names}))
    rows = range(len(LABELS)) if rows is None else rows
    probabilities = _probabilities(np.asarray(predicted))
    lines = [
        json.dumps(
            {
                "id": IDS[i],
                "speaker": str(SPEAKERS[i]),
                "label": int(LABELS[i]),
                "probabilities": probabilities[i].tolist(),
            }
        )
        for i in rows
    ]
    (folder / "predictions_test.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder)


def _command(*arguments, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "emohrnet_jax.compare", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_identical_runs_differ_by_zero_with_p_one(tmp_path):
    predicted = np.where(np.arange(len(LABELS)) % 3 == 0, 0, LABELS)
    run_a = _write_run(tmp_path / "a", predicted)
    run_b = _write_run(tmp_path / "b", predicted)
    out = tmp_path / "comparison.json"
    done = _command(run_a, run_b, f"--json={out}", "--resamples=200", "--seed=3")
    assert done.returncode == 0, done.stderr
    assert "p = 1" in done.stdout
    result = json.loads(out.read_text())
    assert result["ua_difference"] == 0.0 and result["ua_difference_ci95"] == [0.0, 0.0]
    assert result["p_value"] == 1.0
    assert result["ua_a"] == result["ua_b"]
    assert (result["num_utterances"], result["num_speakers"]) == (48, 12)
    assert (result["resamples"], result["seed"]) == (200, 3)


def test_a_run_right_where_the_other_is_wrong(tmp_path):
    # Rows shuffled in B: the comparison pairs utterances by id, not by line.
    order = np.random.default_rng(0).permutation(len(LABELS))
    run_a = _write_run(tmp_path / "a", LABELS)
    run_b = _write_run(tmp_path / "b", (LABELS + 1) % 4, rows=order)
    result = compare.compare(run_a, run_b, resamples=500)
    assert (result["ua_a"], result["ua_b"]) == (1.0, 0.0)
    assert result["ua_difference"] == 1.0 and result["ua_difference_ci95"] == [1.0, 1.0]
    assert result["p_value"] < 0.01
    assert "A - B  +1.0000" in compare.table(result)
    assert "cannot fall below" not in compare.table(result)
    assert "cannot fall below ~0.5" in compare.table({**result, "num_speakers": 2})


def test_cross_validation_folders_are_pooled(tmp_path):
    better, worse = LABELS, np.where(np.arange(len(LABELS)) % 2 == 0, 0, LABELS)
    single = compare.compare(
        _write_run(tmp_path / "a", better), _write_run(tmp_path / "b", worse), resamples=300
    )
    folds = (range(0, 20), range(20, 48))  # speakers spk00..spk04 in fold 0
    for name, predicted in (("cv_a", better), ("cv_b", worse)):
        for k, rows in enumerate(folds):
            _write_run(tmp_path / name / f"fold_{k}", predicted, rows=rows)
    (tmp_path / "cv_a" / "summary.json").write_text("{}")
    pooled = compare.compare(str(tmp_path / "cv_a"), str(tmp_path / "cv_b"), resamples=300)
    for key in ("ua_a", "ua_b", "ua_difference", "ua_difference_ci95", "p_value"):
        assert pooled[key] == single[key]
    assert pooled["num_utterances"] == 48
    # A cross-validation against a run folder of the same utterances.
    mixed = compare.compare(str(tmp_path / "cv_a"), str(tmp_path / "b"), resamples=300)
    assert mixed["ua_difference"] == single["ua_difference"]


def test_differing_test_utterances_are_refused(tmp_path):
    run_a = _write_run(tmp_path / "a", LABELS)
    run_b = _write_run(tmp_path / "b", LABELS, rows=range(47))
    done = _command(run_a, run_b)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "compare: the test utterances differ: 1 ids are in one run only, e.g. 'utt47' "
        "(48 and 47 utterances)"
    ]


def test_differing_labels_class_names_or_missing_files_are_refused(tmp_path):
    run_a = _write_run(tmp_path / "a", LABELS)
    relabelled = tmp_path / "b"
    _write_run(relabelled, LABELS)
    lines = (relabelled / "predictions_test.jsonl").read_text().splitlines()
    row = json.loads(lines[5])
    lines[5] = json.dumps({**row, "label": (row["label"] + 1) % 4})
    (relabelled / "predictions_test.jsonl").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"the labels of 1 test utterances differ, e\.g\. 'utt05'"):
        compare.compare(run_a, str(relabelled))
    renamed = _write_run(tmp_path / "c", LABELS, class_names=["a", "h", "n", "s"])
    with pytest.raises(ValueError, match="class names differ"):
        compare.compare(run_a, renamed)
    (tmp_path / "a" / "predictions_test.jsonl").unlink()
    with pytest.raises(ValueError, match=r"a/predictions_test.jsonl is missing"):
        compare.compare(run_a, renamed)
    with pytest.raises(ValueError, match="neither a run folder"):
        compare.compare(str(tmp_path / "nothing"), renamed)


def _write_seeds(folder, seeds):
    """A cross-validation over seeds: `seeds` maps each seed to its predictions (two folds)."""
    for seed, predicted in seeds.items():
        for k, rows in enumerate((range(0, 20), range(20, 48))):
            _write_run(folder / f"seed_{seed}" / f"fold_{k}", predicted, rows=rows)
    return str(folder)


def test_identical_cross_validations_over_seeds_differ_by_zero_with_p_one(tmp_path):
    worse = np.where(np.arange(len(LABELS)) % 3 == 0, 0, LABELS)
    seeds = {0: LABELS, 1: worse, 2: (LABELS + 1) % 4}
    run_a, run_b = _write_seeds(tmp_path / "a", seeds), _write_seeds(tmp_path / "b", seeds)
    out = tmp_path / "comparison.json"
    done = _command(run_a, run_b, f"--json={out}", "--resamples=200")
    assert done.returncode == 0, done.stderr
    assert "UA averaged over 3 seeds" in done.stdout
    result = json.loads(out.read_text())
    assert (result["ua_difference"], result["ua_difference_ci95"]) == (0.0, [0.0, 0.0])
    assert (result["p_value"], result["num_seeds"]) == (1.0, 3)
    assert (result["num_utterances"], result["num_speakers"]) == (48, 12)


def test_seeds_are_paired_in_order_and_their_differences_averaged(tmp_path):
    # Class 2 (even positions) always called 0: recalls 1, 1, 0, 1, UA 3/4.
    half = np.where(np.arange(len(LABELS)) % 2 == 0, 0, LABELS)
    wrong = (LABELS + 1) % 4
    # Seed pairs (0 vs 5), (1 vs 7): right against half right, and wrong against wrong.
    run_a = _write_seeds(tmp_path / "a", {0: LABELS, 1: wrong})
    run_b = _write_seeds(tmp_path / "b", {5: half, 7: wrong})
    result = compare.compare(run_a, run_b, resamples=300)
    assert result["ua_difference"] == (1.0 - 0.75 + 0.0) / 2
    assert (result["ua_a"], result["ua_b"]) == (0.5, (0.75 + 0.0) / 2)
    low, high = result["ua_difference_ci95"]
    assert low <= result["ua_difference"] <= high
    assert result["num_seeds"] == 2
    # One seed is a cross-validation without seeds: the same result as comparing those.
    one = compare.compare(_write_seeds(tmp_path / "c", {3: LABELS}), str(tmp_path / "b" / "seed_5"))
    plain = compare.compare(str(tmp_path / "a" / "seed_0"), str(tmp_path / "b" / "seed_5"))
    assert one == {**plain, "run_a": one["run_a"]}


def test_different_numbers_of_seeds_or_seeds_of_other_utterances_are_refused(tmp_path):
    run_a = _write_seeds(tmp_path / "a", {0: LABELS, 1: LABELS})
    run_b = _write_seeds(tmp_path / "b", {0: LABELS})
    done = _command(run_a, run_b)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"compare: {run_a} has 2 seeds and {run_b} 1: compare cross-validations of the same "
        "number of seeds"
    ]
    # A run folder counts as one seed.
    with pytest.raises(ValueError, match=r"has 2 seeds and .* 1"):
        compare.compare(run_a, _write_run(tmp_path / "run", LABELS))
    _write_run(tmp_path / "c" / "seed_0" / "fold_0", LABELS)
    _write_run(tmp_path / "c" / "seed_1" / "fold_0", LABELS, rows=range(47))
    with pytest.raises(ValueError, match=r"seed_1 and .*seed_0: the test utterances differ"):
        compare.compare(str(tmp_path / "c"), run_a)
    _write_run(tmp_path / "a" / "fold_0", LABELS)
    with pytest.raises(ValueError, match="both fold_K and seed_S"):
        compare.compare(run_a, run_a)


@pytest.mark.slow
def test_linear_baseline_output_compared_with_itself(tmp_path, tmp_path_factory):
    data_dir = helpers.prepared_tiny_corpus(tmp_path_factory)
    output = tmp_path / "baseline"
    done = subprocess.run(
        [
            sys.executable,
            str(helpers.CONFIGS.parent / "tools" / "linear_baseline.py"),
            *helpers.tiny_flags(data_dir),
            "--features=stats",
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((output / "results.json").read_text())
    assert set(results["test"]["ci95"]) == {"ua", "wa", "macro_f1"}
    rows = [
        json.loads(line) for line in (output / "predictions_test.jsonl").read_text().splitlines()
    ]
    assert len(rows) == results["test"]["num_examples"]
    assert all(len(row["probabilities"]) == len(results["class_names"]) for row in rows)
    out = tmp_path / "comparison.json"
    done = _command(str(output), str(output), f"--json={out}")
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["ua_a"] == pytest.approx(results["test"]["ua"])
    assert (result["ua_difference"], result["p_value"]) == (0.0, 1.0)


def test_runs_in_a_bucket(gcs, tmp_path):
    from emohrnet_jax import storage

    _write_run(tmp_path / "a", LABELS)
    for k, rows in enumerate((range(0, 20), range(20, 48))):
        _write_run(tmp_path / "cv" / f"fold_{k}", (LABELS + 1) % 4, rows=rows)
    storage.upload_tree(str(tmp_path / "a"), f"{gcs}/a")
    storage.upload_tree(str(tmp_path / "cv"), f"{gcs}/cv")
    result = compare.compare(f"{gcs}/a", f"{gcs}/cv", resamples=100)
    assert (result["ua_difference"], result["num_utterances"]) == (1.0, 48)
    storage.path(f"{gcs}/a/predictions_test.jsonl").unlink()
    with pytest.raises(ValueError, match=r"a/predictions_test\.jsonl is missing"):
        compare.compare(f"{gcs}/a", f"{gcs}/cv")
