"""Tests of the fold protocols: random (stratified utterances), EmoBox fold files, the IEMOCAP
improvised-only filter and the text overlap of test and training utterances."""

import collections
import json
import logging

import pytest

from emohrnet_jax import config_check, run_config
from emohrnet_jax.data import emobox, pipeline, protocols, splits
from tests import helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.prepared_tiny_corpus(tmp_path_factory)  # 8 speakers x 8 utterances


def _rows(speakers=6, per_class=5, classes=4):
    """Constructed utterances: each speaker has `per_class` of each class."""
    return [
        protocols.Row(f"spk{s}_u{c}{i}", f"spk{s}", c)
        for s in range(speakers)
        for c in range(classes)
        for i in range(per_class)
    ]


def _ids(fold):
    return {name: [u["id"] for u in fold.utterances(name)] for name in splits.SPLITS}


def test_random_split_is_stratified_deterministic_and_partitions_the_corpus():
    rows = _rows()  # 120 utterances, 30 of each class
    label = {row.id: row.label for row in rows}
    tests = []
    for fold in range(5):
        ids = protocols.random_split(rows, fold, 5, seed=0)
        assert sorted(i for group in ids.values() for i in group) == sorted(label)
        for name, size in (("test", 24), ("validation", 24), ("train", 72)):
            counts = collections.Counter(label[i] for i in ids[name])
            assert sorted(counts) == [0, 1, 2, 3] and set(counts.values()) == {size // 4}, name
        tests += ids["test"]
        backwards = protocols.random_split(rows[::-1], fold, 5, seed=0)  # stored order
        assert {k: sorted(v) for k, v in backwards.items()} == {
            k: sorted(v) for k, v in ids.items()
        }
    assert sorted(tests) == sorted(label)  # each utterance is tested in exactly one fold
    assert protocols.random_split(rows, 0, 5, seed=1) != protocols.random_split(rows, 0, 5, 0)
    with pytest.raises(ValueError, match="out of range"):
        protocols.random_split(rows, 5, 5, seed=0)


def test_each_protocol_has_its_number_of_folds():
    config = helpers.tiny_config("/data", **{"data.dataset": "ravdess", "data.num_folds": None})
    assert protocols.num_folds(config.data) == 6
    config.data.protocol = "random"
    assert protocols.num_folds(config.data) == 5  # not the corpus's speaker protocol
    config.data.num_folds = 10
    assert protocols.num_folds(config.data) == 10
    config.data.protocol, config.data.fold_file = "emobox", "r_train_fold_1.jsonl"
    assert protocols.num_folds(config.data) == 1  # a fold file is one fold


@pytest.mark.slow  # the tiny corpus is prepared once (~12 s), each fold read
def test_random_protocol_on_the_synthetic_corpus_is_speaker_dependent_and_warns(data_dir, caplog):
    config = helpers.tiny_config(data_dir, **{"data.protocol": "random", "data.num_folds": None})
    with caplog.at_level(logging.WARNING):
        fold = pipeline.create_fold_input(config)
    assert protocols.RANDOM_WARNING in caplog.text and "speaker-dependent" in caplog.text
    assert fold.protocol == {"protocol": "random", "speaker_independent": False}
    ids = _ids(fold)
    assert {name: len(group) for name, group in ids.items()} == {
        "train": 38,
        "validation": 13,
        "test": 13,
    }
    labels = {u["id"]: u["label"] for name in splits.SPLITS for u in fold.utterances(name)}
    for name in ("validation", "test"):
        counts = collections.Counter(labels[i] for i in ids[name]).values()
        assert max(counts) - min(counts) <= 1  # 16 per class in the corpus, 3 or 4 each here
    assert set(fold.speakers["test"]) & set(fold.speakers["train"])  # speakers are shared
    again = pipeline.create_fold_input(helpers.tiny_config(data_dir, **{"seed": 5, **_random()}))
    assert _ids(again) == ids  # the training seed does not move the split
    other = helpers.tiny_config(data_dir, **{"data.split_seed": 1, **_random()})
    assert _ids(pipeline.create_fold_input(other)) != ids


def _random():
    return {"data.protocol": "random", "data.num_folds": None}


@pytest.mark.slow  # the tiny corpus is prepared once (~12 s), each fold read
def test_the_default_protocol_selects_speakers_as_before(data_dir):
    fold = pipeline.create_fold_input(helpers.tiny_config(data_dir))
    assert fold.ids is None
    assert fold.protocol == {"protocol": "speaker", "speaker_independent": True}
    assert fold.speakers == splits.fold_speakers(
        "synthetic", [f"spk{i:02d}" for i in range(8)], 0, 4
    )


def _write_fold_file(path, ids, dataset="synthetic"):
    """An EmoBox fold file: one JSON object a line, EmoBox's keys."""
    lines = [
        {
            "key": f"{dataset}-{utterance}",
            "dataset": dataset,
            "wav": f"downloads/{dataset}/{utterance.split('_')[0]}/{utterance}.wav",
            "type": "raw",
            "sample_rate": 16000,
            "num_frame": 16000.0,
            "task": "category",
            "length": 1.0,
            "emo": "neu",
            "channel": 1,
        }
        for utterance in ids
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def _emobox_fold(data_dir, tmp_path, test_speakers, fold_file=None):
    """Fold files over the tiny corpus: `test_speakers` tested, the rest trained on, plus lines
    that match no stored utterance; returns the fold input."""
    every = pipeline.create_fold_input(helpers.tiny_config(data_dir))
    ids = [u["id"] for name in splits.SPLITS for u in every.utterances(name)]
    tested = [i for i in ids if i.split("_")[0] in test_speakers]
    train = _write_fold_file(
        tmp_path / "synthetic_train_fold_1.jsonl",
        [i for i in ids if i not in tested] + ["spk99_u0000", "spk98_u0000"],
    )
    test = _write_fold_file(tmp_path / "synthetic_test_fold_1.jsonl", [*tested, "spk97_u0001"])
    config = helpers.tiny_config(
        data_dir, **{"data.protocol": "emobox", "data.fold_file": fold_file or train}
    )
    return pipeline.create_fold_input(config), train, test, tested


@pytest.mark.slow  # the tiny corpus is prepared once (~12 s), each fold read
def test_an_emobox_fold_file_is_matched_counted_and_gets_validation_speakers(data_dir, tmp_path):
    fold, train, test, tested = _emobox_fold(data_dir, tmp_path, ("spk06", "spk07"))
    assert fold.speakers["test"] == ["spk06", "spk07"]
    validation = fold.speakers["validation"]
    assert len(validation) == 2 and not set(validation) & {"spk06", "spk07"}
    assert not set(validation) & set(fold.speakers["train"])
    assert sorted(_ids(fold)["test"]) == sorted(tested)
    assert {name: fold.count(name) for name in splits.SPLITS} == {
        "train": 32,
        "validation": 16,
        "test": 16,
    }
    assert fold.protocol["protocol"] == "emobox" and fold.protocol["speaker_independent"]
    assert fold.protocol["emobox"] == {
        "train_file": train,
        "test_file": test,
        "matched": {"train": 48, "test": 16},
        "unmatched": {"train": 2, "test": 1},
        "unmatched_examples": [
            "synthetic-spk97_u0001",
            "synthetic-spk98_u0000",
            "synthetic-spk99_u0000",
        ],
        "stored_not_in_fold": 0,
        "validation_speakers": validation,
    }
    # The pair form names the same files; the draw of validation speakers is deterministic.
    again, *_ = _emobox_fold(data_dir, tmp_path, ("spk06", "spk07"), f"{train},{test}")
    assert again.speakers == fold.speakers and again.protocol == fold.protocol


@pytest.mark.slow  # the tiny corpus is prepared once (~12 s), each fold read
def test_an_emobox_fold_testing_training_speakers_is_not_speaker_independent(data_dir, tmp_path):
    every = pipeline.create_fold_input(helpers.tiny_config(data_dir))
    ids = sorted(u["id"] for name in splits.SPLITS for u in every.utterances(name))
    # spk00's utterances split between train and test; the others train.
    train = _write_fold_file(tmp_path / "a_train_fold_2.jsonl", ids[4:])
    test = _write_fold_file(tmp_path / "a_test_fold_2.jsonl", ids[:4])
    config = helpers.tiny_config(
        data_dir, **{"data.protocol": "emobox", "data.fold_file": f"{train},{test}"}
    )
    fold = pipeline.create_fold_input(config)
    assert fold.protocol["speaker_independent"] is False
    assert "spk00" in fold.speakers["train"] and "spk00" not in fold.speakers["validation"]
    both = _write_fold_file(tmp_path / "b_test_fold_2.jsonl", ids[:5] + ids[4:5])
    config.data.fold_file = f"{train},{both}"
    with pytest.raises(ValueError, match="in both"):
        pipeline.create_fold_input(config)


def test_emobox_file_names_and_ids():
    assert emobox.files("gs://b/ravdess/fold_1/ravdess_train_fold_1.jsonl") == (
        "gs://b/ravdess/fold_1/ravdess_train_fold_1.jsonl",
        "gs://b/ravdess/fold_1/ravdess_test_fold_1.jsonl",
    )
    assert emobox.files("a.jsonl, b.jsonl") == ("a.jsonl", "b.jsonl")
    with pytest.raises(ValueError, match="neither"):
        emobox.files("fold_1.jsonl")
    stored = {"03-01-05-01-02-01-12", "Ses01F_impro01_F000"}
    entry = {"key": "ravdess-03-01-05-01-02-01-12", "dataset": "ravdess", "wav": "x/other.wav"}
    assert emobox.utterance_id(entry, "ravdess", stored) == "03-01-05-01-02-01-12"
    entry = {"key": "k", "wav": "downloads/iemocap/Session1/Ses01F_impro01_F000.wav"}
    assert emobox.utterance_id(entry, "iemocap", stored) == "Ses01F_impro01_F000"
    assert emobox.utterance_id({"key": "emovo-dis-f1-b1"}, "emovo", stored) is None


def test_validation_is_carved_in_whole_iemocap_sessions():
    train = {f"Ses0{i}{g}" for i in (2, 3, 4, 5) for g in "FM"}
    chosen = emobox.carve_validation("iemocap", train, {"Ses01F", "Ses01M"}, seed=0)
    assert len(chosen) == 2 and len({s[:5] for s in chosen}) == 1
    with pytest.raises(ValueError, match="at least 2"):
        emobox.carve_validation("ravdess", {"Actor_01"}, {"Actor_02"}, seed=0)


def test_text_units_of_each_corpus():
    assert protocols.text_unit("ravdess", "03-01-05-01-02-01-12") == "02"
    assert protocols.text_unit("emovo", "dis-f1-b1") == "b1"
    assert protocols.text_unit("iemocap", "Ses01F_script01_1_F000") == "script01_1"
    assert protocols.text_unit("iemocap", "Ses03M_impro05b_M012") is None
    assert protocols.text_unit("synthetic", "spk00_u0001") is None


def test_text_overlap_counts_test_utterances_sharing_a_training_text():
    ravdess = {
        "train": ["03-01-05-01-01-01-01", "03-01-03-01-01-02-02"],
        "validation": ["03-01-05-01-02-01-03"],  # validation text does not count
        "test": ["03-01-05-01-01-01-04", "03-01-05-01-02-01-04", "03-01-01-01-01-01-04"],
    }
    assert protocols.text_overlap("ravdess", ravdess) == {
        "unit": "sentence",
        "test_utterances": 2,
        "of": 3,
    }
    emovo = {"train": ["dis-f1-b1", "neu-m1-l2"], "validation": [], "test": ["gio-f2-b1", "x"]}
    assert protocols.text_overlap("emovo", emovo)["test_utterances"] == 1
    iemocap = {
        "train": ["Ses01F_script01_1_F000", "Ses01M_impro01_M000"],
        "validation": [],
        "test": ["Ses05F_script01_1_M003", "Ses05F_script02_1_F000", "Ses05M_impro01_F001"],
    }
    assert protocols.text_overlap("iemocap", iemocap) == {
        "unit": "script",
        "test_utterances": 1,
        "of": 3,
    }
    assert protocols.text_overlap("synthetic", iemocap) is None
    assert protocols.text_overlap("labelled_folder", iemocap) is None


def _iemocap_config(**data):
    config = helpers.tiny_config("/data")
    config.data.dataset, config.data.num_folds = "iemocap", None
    config.data.update(data)
    return config


def _iemocap_rows():
    return [
        protocols.Row(f"Ses0{s}{g}_{dialog}_{g}00{i}", f"Ses0{s}{g}", i % 4)
        for s in range(1, 6)
        for g in "FM"
        for dialog in ("impro01", "script01_1")
        for i in range(4)
    ]


def test_the_improvised_filter_keeps_improvised_dialogs_in_every_split():
    rows = _iemocap_rows()
    speakers = sorted({row.speaker for row in rows})
    config = _iemocap_config(iemocap_dialogs="improvised")
    assert protocols.needs_rows(config.data)
    split = protocols.fold_split(config.data, speakers, rows)
    assert split.about == {
        "protocol": "speaker",
        "iemocap_dialogs": "improvised",
        "speaker_independent": True,
    }
    assert split.speakers == splits.fold_speakers("iemocap", speakers, 0)
    for name, ids in split.ids.items():
        assert ids and all("_impro01_" in i for i in ids), name
        assert {i[:6] for i in ids} == set(split.speakers[name])
    config = _iemocap_config(iemocap_dialogs="improvised", protocol="random")
    split = protocols.fold_split(config.data, speakers, rows)
    assert all("_impro" in i for ids in split.ids.values() for i in ids)
    everything = protocols.fold_split(_iemocap_config().data, speakers, rows)
    assert everything.ids is None and everything.about["iemocap_dialogs"] == "all"


def test_protocol_mistakes_are_one_line_config_errors():
    config = helpers.tiny_config("/data", **{"data.iemocap_dialogs": "improvised"})
    with pytest.raises(config_check.ConfigError, match="IEMOCAP only, not synthetic"):
        config_check.check(config)
    for changes, message in (
        ({"data.protocol": "speakers"}, "is not one of"),
        ({"data.protocol": "emobox"}, "needs config.data.fold_file"),
        ({"data.fold_file": "a_train_fold_1.jsonl"}, "protocol=emobox"),
    ):
        with pytest.raises(config_check.ConfigError, match=message):
            config_check.check(helpers.tiny_config("/data", **changes))


def test_a_run_saved_before_protocols_resumes_only_under_the_speaker_protocol():
    config = helpers.tiny_config("/data")
    saved = run_config.as_json(config)
    for field in ("protocol", "split_seed", "fold_file", "iemocap_dialogs"):
        del saved["data"][field]
    assert run_config.differences(saved, run_config.as_json(config)) == []
    config.data.protocol = "random"
    assert run_config.differences(saved, run_config.as_json(config)) == [
        "data.protocol: 'speaker' -> 'random'"
    ]


@pytest.mark.slow
def test_a_random_protocol_run_says_so_in_its_results_and_splits(data_dir, tmp_path):
    from emohrnet_jax import train  # JAX only for this test

    config = helpers.tiny_config(data_dir, **_random(), num_epochs=1)
    train.train_and_evaluate(config, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["protocol"] == "random" and results["speaker_independent"] is False
    assert results["text_overlap"] is None  # the synthetic corpus has no text
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["protocol"] == "random" and saved["speaker_independent"] is False
    assert saved["split_fingerprint"] == results["split_fingerprint"]
    assert set(results["speakers"]["test"]) & set(results["speakers"]["train"])
