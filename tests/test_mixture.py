"""Tests of multi-corpus training: the mixture's config, its epoch shares, a two-corpus run that
resumes after a kill, and leave-one-corpus-out cross-validation."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from emohrnet_jax import config_check, cross_validation, mixture_spec, predict, report, train
from emohrnet_jax.data import balance, builders, corpora, cross_corpus, pipeline
from tests import helpers

FOLDER_MAP = "anger=angry, joy=happy, neutral=neutral"  # "calm" has no class of the run


def _entries(csv: str, **folder) -> tuple[ml_collections.ConfigDict, ...]:
    return (
        ml_collections.ConfigDict({"dataset": "synthetic"}),
        ml_collections.ConfigDict(
            {"dataset": "labelled_folder", "name": "folder", "csv": csv, "label_map": FOLDER_MAP}
            | folder
        ),
    )


def mixture_config(data_dir, csv: str, **overrides) -> ml_collections.ConfigDict:
    """`helpers.tiny_config` on the tiny synthetic corpus and a labelled folder, equal shares."""
    config = helpers.tiny_config(data_dir, **overrides)
    config.data.dataset = "mixture"
    config.data.datasets = _entries(csv)
    config.data.mixture = overrides.get("data.mixture", "equal")
    return config


# The config's checks: one line each, before anything is loaded.


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.data.update(dataset="synthetic"), "set --config.data.dataset=mixture"),
        (lambda c: c.data.update(datasets=()), "needs config.data.datasets to list at least 1"),
        (
            lambda c: c.data.update(datasets=_entries("x.csv", name="synthetic")),
            "names ['synthetic'] more than once",
        ),
        (lambda c: c.data.update(datasets=_entries("x.csv", fold=2)), "unknown fields ['fold']"),
        (
            lambda c: c.data.update(datasets=_entries("x.csv", weight=2.0)),
            "would ignore them: set mixture='given'",
        ),
        (lambda c: c.data.update(datasets=_entries("x.csv", weight=0.0), mixture="given"), "> 0"),
        (lambda c: c.data.update(mixture="natural"), "mixture='natural' is not one of"),
        (lambda c: c.data.update(protocol="random"), "does not apply to a mixture"),
        (lambda c: c.data.update(csv="y.csv"), "in its entry of config.data.datasets"),
        (
            lambda c: c.data.update(protocol="leave_one_corpus_out", datasets=_entries("x")[:1]),
            "at least 2 prepared corpora",
        ),
    ],
)
def test_mixture_mistakes_are_one_line_config_errors(tmp_path, change, message):
    config = mixture_config(tmp_path, "x.csv")
    change(config)
    with pytest.raises(config_check.ConfigError, match=message.replace("[", r"\[")):
        config_check.check(config)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mixture": "equal"}, "applies to config.data.dataset='mixture' only"),
        ({"protocol": "leave_one_corpus_out"}, "needs several corpora"),
    ],
)
def test_mixture_fields_on_one_corpus_are_refused(tmp_path, fields, message):
    config = helpers.tiny_config(tmp_path)
    config.data.update(fields)
    with pytest.raises(config_check.ConfigError, match=message):
        config_check.check(config)


def test_entries_carry_each_corpus_own_config(tmp_path):
    config = mixture_config(tmp_path, "x.csv", **{"data.protocol": "leave_one_corpus_out"})
    config.data.fold = 1
    synthetic_entry, folder = mixture_spec.entries(config.data)
    assert (synthetic_entry.name, folder.name) == ("synthetic", "folder")
    assert folder.data_config.dataset == "labelled_folder" and folder.data_config.csv == "x.csv"
    assert folder.label_map == FOLDER_MAP
    # Its validation speakers are those of its own fold 0, whichever corpus is left out.
    assert folder.data_config.fold == 0 and folder.data_config.protocol == "speaker"
    assert folder.data_config.n_mels == config.data.n_mels  # the run's features for every corpus
    assert mixture_spec.num_folds(config.data) == 2


def test_corpus_shares():
    sizes, weights = [30, 10, 0], [1.0, 3.0, 5.0]
    np.testing.assert_allclose(mixture_spec.corpus_shares("size", sizes, weights), [0.75, 0.25, 0])
    np.testing.assert_allclose(mixture_spec.corpus_shares("equal", sizes, weights), [0.5, 0.5, 0])
    np.testing.assert_allclose(mixture_spec.corpus_shares("given", sizes, weights), [0.25, 0.75, 0])


def test_weighted_order_draws_each_group_in_its_share_and_repeats_only_after_the_group():
    groups = [0] * 40 + [1] * 7 + [2] * 13
    order = balance.weighted_order(groups, {0: 0.5, 1: 0.3, 2: 0.2}, 101, seed=3, epoch=1)
    drawn = collections.Counter(np.asarray(groups)[order].tolist())
    assert drawn == {0: 51, 1: 30, 2: 20}  # 50.5, 30.3, 20.2: the largest remainder rounds up
    group_1 = [i for i in order if groups[i] == 1]
    assert sorted(group_1[:7]) == list(range(40, 47))  # each example once before any repeats
    again = balance.weighted_order(groups, {0: 0.5, 1: 0.3, 2: 0.2}, 101, seed=3, epoch=1)
    np.testing.assert_array_equal(order, again)
    other = balance.weighted_order(groups, {0: 0.5, 1: 0.3, 2: 0.2}, 101, seed=3, epoch=2)
    assert not np.array_equal(order, other)


# Two prepared corpora: the tiny synthetic one and a labelled folder of 4 speakers.


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, csv) of both corpora, prepared once for the module."""
    data_dir = helpers.prepared_tiny_corpus(tmp_path_factory)
    folder = tmp_path_factory.mktemp("folder")
    return data_dir, helpers.prepared_labelled_folder(folder, helpers.tiny_config(data_dir).data, 4)


@pytest.mark.slow
def test_a_fold_merges_each_corpus_fold_with_prefixed_ids_and_mapped_labels(prepared):
    fold = pipeline.create_fold_input(mixture_config(*prepared))
    assert fold.corpora == ("synthetic", "folder")
    for split in ("train", "validation", "test"):
        utterances = fold.utterances(split)
        assert len(utterances) == fold.count(split)
        by_corpus = collections.Counter(u["id"].split("/")[0] for u in utterances)
        assert set(by_corpus) == {"synthetic", "folder"}, split
        assert all(u["speaker"].split("/")[0] == u["id"].split("/")[0] for u in utterances)
        folder_labels = {u["label"] for u in utterances if u["id"].startswith("folder/")}
        assert folder_labels <= {0, 1, 2}  # neutral, happy, angry; calm left out
    # 4 folder speakers in 4 folds: one speaker a split, 6 of its 8 clips mapped (calm is 2).
    assert fold.count("test") == 2 * 8 + 6
    corpora_about = fold.protocol["corpora"]
    assert [c["name"] for c in corpora_about] == ["synthetic", "folder"]
    assert corpora_about[1]["left_out"] == {"calm": 8}


@pytest.mark.slow
def test_an_equal_mixture_draws_each_corpus_half_of_the_epoch_deterministically(prepared):
    fold = pipeline.create_fold_input(mixture_config(*prepared))
    ids = [u["id"] for u in fold.utterances("train")]
    order = fold.training_order(fold.count("train"), seed=0, epoch=0, sampling="shuffle")
    drawn = collections.Counter(ids[i].split("/")[0] for i in order)
    assert abs(drawn["synthetic"] - drawn["folder"]) <= 1
    # The batches, as the training loop reads them, are a pure function of seed and epoch.
    first = [b["label"].tolist() for b in fold.train_batches(8, 0, 0)]
    assert first == [b["label"].tolist() for b in fold.train_batches(8, 0, 0)]
    assert first != [b["label"].tolist() for b in fold.train_batches(8, 0, 1)]


def _config_file(tmp_path, data_dir, csv) -> str:
    """A config file of `mixture_config` for the entry point (configs are code)."""
    path = tmp_path / "mixture_config.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(helpers.CONFIGS.parent)!r})\n"
        "from tests import test_mixture\n\n\n"
        "def get_config():\n"
        f"    return test_mixture.mixture_config({str(data_dir)!r}, {csv!r})\n"
    )
    return str(path)


@pytest.mark.slow
def test_a_two_corpus_run_reports_each_corpus_and_resumes_after_a_kill(prepared, tmp_path):
    data_dir, csv = prepared
    reference = tmp_path / "reference"
    results = train.train_and_evaluate(mixture_config(data_dir, csv), str(reference))
    for split in ("validation", "test"):
        per_corpus = results[split]["per_corpus"]
        assert list(per_corpus) == ["synthetic", "folder"]
        assert sum(c["num_examples"] for c in per_corpus.values()) == results[split]["num_examples"]
        pooled = np.sum([c["confusion_matrix"] for c in per_corpus.values()], axis=0)
        assert pooled.tolist() == results[split]["confusion_matrix"]
        assert per_corpus["folder"]["per_class_recall"]["sad"] is None  # no sad in the folder
        assert "ci95" in per_corpus["synthetic"]
    assert results["dataset"] == "mixture" and results["mixture"] == "equal"
    assert (reference / "confusion_matrix_folder.png").exists()
    assert (reference / "confusion_matrix_synthetic.png").exists()
    with open(reference / "splits.json") as file:
        assert json.load(file)["dataset"] == "mixture"
    table = report.format_table(results)
    assert "  test folder" in table and "corpus folder (labelled_folder, equal mixture)" in table

    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "emohrnet_jax.main",
        f"--config={_config_file(tmp_path, data_dir, csv)}",
        f"--workdir={killed}",
    ]
    # conftest's XLA flags and compilation cache: the same 8 devices and compiled steps.
    process = subprocess.Popen(command, env=os.environ, stderr=subprocess.PIPE, text=True)
    saved = killed / "checkpoints"
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline:
        if saved.is_dir() and any(p.name.isdigit() for p in saved.iterdir()):
            break  # the first epoch's checkpoint: killed in the second epoch
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
    assert not (killed / "results.json").exists()
    resumed = train.train_and_evaluate(mixture_config(data_dir, csv), str(killed))
    assert resumed["best_epoch"] == results["best_epoch"]
    for split in ("validation", "test"):
        assert resumed[split]["confusion_matrix"] == results[split]["confusion_matrix"]
        assert resumed[split]["loss"] == pytest.approx(results[split]["loss"], rel=1e-4)
        for corpus in ("synthetic", "folder"):
            assert (
                resumed[split]["per_corpus"][corpus]["ua"]
                == results[split]["per_corpus"][corpus]["ua"]
            )
    # A mixture's run serves as any other: its features, classes and best state.
    scored = predict.Predictor(str(killed)).predict(helpers.speech(1.0), 16000)
    assert list(scored.probabilities) == results["class_names"]


@pytest.mark.slow
def test_leave_one_corpus_out_cross_validation_tests_on_each_corpus_in_turn(prepared, tmp_path):
    config = mixture_config(*prepared, num_epochs=1)
    config.data.protocol = "leave_one_corpus_out"
    config.data.mixture = "size"
    summary = cross_validation.run_folds(config, str(tmp_path))
    assert summary["num_folds"] == summary["folds_done"] == 2
    for k, left_out in enumerate(("synthetic", "folder")):
        with open(tmp_path / f"fold_{k}" / "results.json") as file:
            results = json.load(file)
        assert list(results["test"]["per_corpus"]) == [left_out]
        trained = {s.split("/")[0] for s in results["speakers"]["train"]}
        validated = {s.split("/")[0] for s in results["speakers"]["validation"]}
        assert trained == validated == {"synthetic", "folder"} - {left_out}
        assert results["test"]["num_examples"] == {"synthetic": 64, "folder": 24}[left_out]
        assert results["protocol"] == "leave_one_corpus_out"
    per_corpus = summary["per_corpus"]
    assert {name: c["runs"] for name, c in per_corpus.items()} == {"synthetic": 1, "folder": 1}
    assert per_corpus["folder"]["num_examples"] == 24
    assert "corpus folder: pooled UA" in cross_validation.format_summary(summary)


def _classes(data) -> tuple[str, ...]:
    """The classes a corpus is built with (IEMOCAP's by its label set)."""
    if data.dataset == "iemocap":
        return corpora.IEMOCAP_CLASSES[data.label_set]
    return builders.BUILDERS[data.dataset].class_names(None)


@pytest.mark.parametrize(
    "name",
    sorted(
        p.stem
        for p in helpers.CONFIGS.glob("*.py")
        if p.stem not in ("__init__", "default", "demo", "multi_corpus")
    ),
)
def test_each_corpus_config_passes_the_checks_with_its_corpus_classes(name):
    config = helpers.load_config(name)
    config_check.check(config)
    assert tuple(config.data.class_names) == _classes(config.data)


def test_the_multi_corpus_config_maps_every_corpus_onto_its_classes():
    config = helpers.load_config("multi_corpus")
    config_check.check(config)
    assert mixture_spec.num_folds(config.data) == 5
    for index, entry in enumerate(mixture_spec.entries(config.data)):
        mapping = cross_corpus.parse_label_map(
            entry.label_map, _classes(entry.data_config), config.data.class_names
        )
        assert sorted(mapping.values()) == sorted(config.data.class_names), index
