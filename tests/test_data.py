"""Tests of the tfds builders, the build summary, speaker-independent folds and the pipeline."""

import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from emohrnet_jax import windows
from emohrnet_jax.audio import features, synthetic
from emohrnet_jax.data import builders, corpora, cross_corpus, loading, pipeline, splits
from tests import helpers

# Small features keep the builds fast; the code paths are the same as the defaults'.
PARAMS = features.FeatureParams(n_mels=32, n_fft=512, hop_length=256)


def _tone(seconds=0.6, rate=16000, channels=1, amplitude=0.3, frequency=220.0):
    t = np.arange(int(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * frequency * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _wav(path, data, rate=16000, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate, subtype=subtype)
    return path


def _ravdess_tree(root):
    """Two actors, all 8 emotions, plus the bad files a real download can contain."""
    for actor in (1, 2):
        for emotion in range(1, 9):
            name = f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav"
            _wav(root / f"Actor_{actor:02d}" / name, _tone(frequency=100 + 40 * emotion))
    bad = root / "Actor_03"
    bad.mkdir()
    (bad / "03-01-01-01-01-01-03.wav").write_bytes(b"RIFF\x00\x00garbage-not-a-wav")  # corrupt
    (bad / "03-01-02-01-01-01-03.wav").write_bytes(b"")  # zero length
    _wav(bad / "03-01-03-01-01-01-03.wav", np.zeros(16000))  # digital silence
    _wav(bad / "03-01-04-01-01-01-03.wav", _tone(0.1))  # shorter than min_seconds
    stereo = _tone(rate=48000, channels=2)
    _wav(bad / "03-01-05-01-01-01-03.wav", stereo, rate=48000, subtype="PCM_24")  # kept
    _wav(bad / "03-02-05-01-01-01-03.wav", _tone())  # song: excluded by the protocol


@pytest.fixture(scope="module")
def ravdess_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess")
    raw, data_dir = root / "raw", root / "tfds"
    _ravdess_tree(raw)
    summary = builders.prepare(
        "ravdess", str(data_dir), str(raw), feature_params=PARAMS, num_workers=2
    )
    shutil.rmtree(raw)  # Reading back must not need the raw files.
    return summary, data_dir


@pytest.mark.slow
def test_bad_files_are_skipped_and_counted_by_reason(ravdess_build):
    summary, _ = ravdess_build
    assert summary["kept"] == 17
    assert summary["skipped"] == {
        "cannot decode audio": 2,
        "shorter than 0.25 s": 1,
        "silent": 1,
    }
    assert summary["excluded"] == {"vocal channel 02 (song)": 1}
    assert summary["conversions"] == {
        "downmixed 2 channels to mono": 1,
        "resampled from 48000 Hz": 1,
    }
    assert summary["speakers"] == ["Actor_01", "Actor_02", "Actor_03"]
    with open(os.path.join(summary["data_dir"], builders.SUMMARY_FILE)) as file:
        assert json.load(file)["skipped"] == summary["skipped"]


@pytest.mark.slow
def test_prepared_dataset_reads_back_by_name_without_raw_files(ravdess_build):
    _, data_dir = ravdess_build
    builder = tfds.builder(
        "ravdess", data_dir=str(data_dir), config=builders.make_config("ravdess", PARAMS)
    )
    assert builder.info.features["label"].names == list(corpora.RAVDESS_CLASSES)
    examples = list(tfds.as_numpy(builder.as_dataset(split=builders.SPLIT)))
    assert len(examples) == 17
    by_id = {e["id"].decode(): e for e in examples}
    example = by_id["03-01-03-01-01-01-01"]
    assert corpora.RAVDESS_CLASSES[example["label"]] == "happy"
    assert example["speaker"] == b"Actor_01"
    assert example["mel"].shape == (32, example["num_frames"])
    assert example["num_frames"] == 1 + int(0.6 * 16000) // 256
    assert np.isfinite(example["mel"]).all()
    assert example["duration"] == pytest.approx(0.6, abs=1e-3)
    # The stereo 48 kHz clip was downmixed and resampled, not dropped.
    assert by_id["03-01-05-01-01-01-03"]["duration"] == pytest.approx(0.6, abs=1e-3)
    assert builder.info.metadata["feature_params"] == PARAMS.as_dict()


@pytest.mark.slow
def test_rebuilding_is_a_no_op(ravdess_build):
    summary, data_dir = ravdess_build
    again = builders.prepare("ravdess", str(data_dir), "/nonexistent", feature_params=PARAMS)
    assert again == summary


def test_all_builders_are_registered_and_default_configs_resolve():
    for name in ("ravdess", "iemocap", "emovo", "labelled_folder", "synthetic"):
        assert name in tfds.list_builders()
        assert tfds.builder_cls(name).BUILDER_CONFIGS[0].feature_params == features.FeatureParams()


def test_unknown_label_names_the_file_or_is_skipped_when_asked(tmp_path):
    raw = tmp_path / "raw"
    _wav(raw / "clips" / "a.wav", _tone())
    _wav(raw / "clips" / "b.wav", _tone(frequency=300))
    (raw / "clips.csv").write_text("path,label,speaker\nclips/a.wav,calm,s1\nclips/b.wav,rage,s2\n")
    prepare = functools.partial(
        builders.prepare,
        "labelled_folder",
        str(tmp_path / "tfds"),
        feature_params=PARAMS,
        num_workers=0,
        csv_path=str(raw / "clips.csv"),
        class_names=("calm",),
    )
    with pytest.raises(corpora.UnknownLabelError, match=r"b\.wav"):
        prepare()
    summary = prepare(skip_unknown_labels=True)
    assert summary["kept"] == 1
    assert sum(summary["excluded"].values()) == 1


SPEC = synthetic.CorpusSpec(num_speakers=6, utterances_per_speaker=8, seed=3)


@pytest.fixture(scope="module")
def synthetic_config(tmp_path_factory):
    """A demo-like config on a small synthetic corpus, prepared once."""
    config = helpers.load_config("demo")
    config.data.data_dir = str(tmp_path_factory.mktemp("synthetic"))
    config.data.n_mels, config.data.n_fft, config.data.num_frames = 32, 512, 64
    config.data.synthetic_speakers = SPEC.num_speakers
    config.data.synthetic_utterances_per_speaker = SPEC.utterances_per_speaker
    config.data.synthetic_seed = SPEC.seed
    config.data.num_folds = 3
    return config


@pytest.fixture(scope="module")
def fold(synthetic_config):
    return pipeline.create_fold_input(synthetic_config)


@pytest.mark.slow
def test_synthetic_corpus_is_prepared_on_first_use_balanced_and_deterministic(
    fold, synthetic_config, tmp_path
):
    builder = fold.builder
    labels = [int(e["label"]) for e in tfds.as_numpy(builder.as_dataset(split=builders.SPLIT))]
    assert np.bincount(labels).tolist() == [12, 12, 12, 12]
    # A second build elsewhere gives the same features, byte for byte.
    synthetic_config.data.data_dir = str(tmp_path)
    again = loading.load_builder(synthetic_config.data).as_dataset(split=builders.SPLIT)
    first = {
        e["id"]: e["mel"].tobytes() for e in tfds.as_numpy(builder.as_dataset(split="utterances"))
    }
    second = {e["id"]: e["mel"].tobytes() for e in tfds.as_numpy(again)}
    assert first == second


def test_fold_speakers_are_disjoint_and_saved_with_the_build(fold, tmp_path):
    assert sorted(s for group in fold.speakers.values() for s in group) == [
        f"spk{i:02d}" for i in range(6)
    ]
    ids = {name: [u["id"] for u in fold.utterances(name)] for name in splits.SPLITS}
    fingerprint = splits.split_fingerprint(ids)
    path = str(tmp_path / "splits.json")
    splits.save_splits(path, "synthetic", 0, fold.speakers, "ab12", fingerprint)
    with open(tmp_path / "splits.json") as file:
        assert json.load(file) == {
            "dataset": "synthetic",
            "fold": 0,
            "build": "ab12",
            "split_fingerprint": fingerprint,
            **fold.speakers,
        }
    # The ids' order within a split does not count; which split an id is in does.
    assert splits.split_fingerprint({k: v[::-1] for k, v in ids.items()}) == fingerprint
    moved = {**ids, "train": ids["train"][1:], "test": ids["test"] + ids["train"][:1]}
    assert splits.split_fingerprint(moved) != fingerprint
    counts = {name: fold.count(name) for name in ("train", "validation", "test")}
    assert counts == {"train": 16, "validation": 16, "test": 16}


def test_train_batches_are_cropped_deterministic_per_epoch_and_reshuffled(fold):
    epoch0 = list(fold.train_batches(batch_size=4, seed=0, epoch=0))
    assert len(epoch0) == 4
    assert epoch0[0]["mel"].shape == (4, 32, 64) and epoch0[0]["mel"].dtype == np.float32
    again = list(fold.train_batches(batch_size=4, seed=0, epoch=0))
    epoch1 = list(fold.train_batches(batch_size=4, seed=0, epoch=1))
    ids = lambda batches: [i for b in batches for i in b["id"]]  # noqa: E731
    assert ids(epoch0) == ids(again)
    np.testing.assert_array_equal(epoch0[0]["mel"], again[0]["mel"])
    assert ids(epoch0) != ids(epoch1)
    assert sorted(ids(epoch0)) == sorted(ids(epoch1))
    train_speakers = {i.decode().split("_")[0] for i in ids(epoch0)}
    assert train_speakers == set(fold.speakers["train"])


def test_hosts_split_the_global_batch(fold):
    hosts = [
        list(fold.train_batches(4, seed=0, epoch=0, process_index=p, process_count=2))
        for p in (0, 1)
    ]
    assert len(hosts[0]) == len(hosts[1]) == 4
    assert hosts[0][0]["mel"].shape[0] == 2
    ids = [{i for b in host for i in b["id"]} for host in hosts]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 16


def _rows(per_host):
    """(index, label, window) of the real rows of the hosts' evaluation batches, in the global
    order: batch by batch, the hosts' rows in process order."""
    rows = []
    for batches in zip(*per_host, strict=True):
        for b in batches:
            real = b["mask"]
            assert (b["index"][~real] == -1).all() and (b["mel"][~real] == 0).all()
            rows += list(zip(b["index"][real], b["label"][real], b["mel"][real], strict=True))
    return rows


@pytest.mark.parametrize("process_count", [1, 2])
def test_evaluation_scores_every_window_of_every_example_once(fold, process_count):
    windowing = windows.Windowing(num_frames=64, hop_frames=32)
    per_host = [
        list(fold.eval_batches("test", 6, windowing, p, process_count))
        for p in range(process_count)
    ]
    assert len({len(batches) for batches in per_host}) == 1  # same step count on every host
    assert all(b["mel"].shape == (6 // process_count, 32, 64) for h in per_host for b in h)
    stored = {
        e["id"].decode(): e["mel"]
        for e in tfds.as_numpy(fold.builder.as_dataset(split=builders.SPLIT))
    }
    utterances = fold.utterances("test")
    expected = [
        (i, u["label"], window)
        for i, u in enumerate(utterances)
        for window in windowing.windows(stored[u["id"]])
    ]
    rows = _rows(per_host)
    assert len(expected) > len(utterances)  # long utterances: several windows
    assert len(rows) % 6 and not all(h[-1]["mask"].all() for h in per_host)  # padded at the end
    assert [(int(i), int(label)) for i, label, _ in rows] == [(i, y) for i, y, _ in expected]
    np.testing.assert_array_equal(
        np.stack([row[2] for row in rows]), np.stack([window for _, _, window in expected])
    )


def test_the_centre_crop_is_one_window_at_the_middle(fold):
    centre = windows.Windowing(num_frames=64, hop_frames=32, mode=windows.CENTRE_CROP)
    rows = _rows([list(fold.eval_batches("validation", 8, centre))])
    normalized = list(tfds.as_numpy(fold.split("validation")))
    assert [int(i) for i, _, _ in rows] == list(range(len(normalized)))
    for (_, _, window), example in zip(rows, normalized, strict=True):
        mel = example["mel"]
        start = max(mel.shape[1] - 64, 0) // 2
        crop = mel[:, start : start + 64]
        np.testing.assert_allclose(window[:, : crop.shape[1]], crop, atol=1e-5)


def test_normalization_is_per_utterance_and_keeps_the_spectral_shape(fold):
    normalized = next(iter(tfds.as_numpy(fold.split("validation"))))
    stored = next(
        e
        for e in tfds.as_numpy(fold.builder.as_dataset(split=builders.SPLIT))
        if e["id"] == normalized["id"]
    )
    assert normalized["mel"].mean() == pytest.approx(0.0, abs=1e-4)
    assert normalized["mel"].std() == pytest.approx(1.0, abs=1e-3)
    # An affine map of the stored log-Mel: band-to-band differences survive, up to scale.
    raw = stored["mel"].astype(np.float64)
    np.testing.assert_allclose(
        normalized["mel"], (raw - raw.mean()) / raw.std(), rtol=1e-3, atol=1e-3
    )


def test_config_must_match_the_prepared_dataset(synthetic_config):
    config = synthetic_config.copy_and_resolve_references()
    config.data.class_names = ("happy", "neutral", "angry", "sad")
    with pytest.raises(ValueError, match="class_names"):
        loading.load_builder(config.data)
    config = synthetic_config.copy_and_resolve_references()
    config.data.dataset = "ravdess"
    config.data.data_dir = "/nonexistent"
    with pytest.raises(FileNotFoundError, match=r"tools/prepare_data\.py --dataset=ravdess"):
        loading.load_builder(config.data)


# Folds


def _corpus_speakers():
    return {
        "iemocap": [f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"],
        "ravdess": [f"Actor_{a:02d}" for a in range(1, 25)],
        "emovo": ["f1", "f2", "f3", "m1", "m2", "m3"],
        "synthetic": [f"spk{i:02d}" for i in range(40)],
        "labelled_folder": [f"speaker{i}" for i in range(7)],
    }


@pytest.mark.parametrize("dataset", sorted(_corpus_speakers()))
def test_every_fold_of_every_corpus_is_speaker_independent(dataset):
    speakers = _corpus_speakers()[dataset]
    folds = splits.num_folds(dataset)
    tested = []
    for fold in range(folds):
        split = splits.fold_speakers(dataset, speakers, fold)
        train, validation, test = (set(split[k]) for k in ("train", "validation", "test"))
        assert train and validation and test
        assert not train & validation and not train & test and not validation & test
        assert train | validation | test == set(speakers)
        tested += split["test"]
    assert sorted(tested) == sorted(speakers)  # every speaker is tested exactly once


def test_fold_protocols_follow_the_corpora():
    speakers = _corpus_speakers()
    iemocap = splits.fold_speakers("iemocap", speakers["iemocap"], 0)
    assert iemocap["test"] == ["Ses01F", "Ses01M"] and iemocap["validation"] == ["Ses02F", "Ses02M"]
    ravdess = splits.fold_speakers("ravdess", speakers["ravdess"], 5)
    assert ravdess["test"] == ["Actor_21", "Actor_22", "Actor_23", "Actor_24"]
    emovo = splits.fold_speakers("emovo", speakers["emovo"], 0)
    assert emovo["test"] == ["f1"] and emovo["validation"] == ["m1"]
    assert splits.speaker_groups("emovo", speakers["emovo"], 3) == [
        ["f1", "m1"],
        ["f2", "m2"],
        ["f3", "m3"],
    ]
    with pytest.raises(ValueError, match="out of range"):
        splits.fold_speakers("iemocap", speakers["iemocap"], 5)
    with pytest.raises(ValueError, match="leave-one-session-out"):
        splits.fold_speakers("iemocap", speakers["iemocap"], 0, folds=10)


# tools/prepare_data.py


def _prepare_data(*args):
    tool = helpers.CONFIGS.parent / "tools" / "prepare_data.py"
    return subprocess.run(
        [sys.executable, str(tool), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_prepare_data_builds_a_labelled_folder_that_reads_back_by_name(tmp_path):
    raw = tmp_path / "my corpus"
    rows = ""
    # 16-bit WAV, FLAC and float WAV at 22.05 kHz all decode.
    clips = [
        ("wav", "PCM_16", 16000, "calm", "a"),
        ("flac", "PCM_16", 16000, "tense", "a"),
        ("wav", "FLOAT", 22050, "calm", "b"),
    ]
    for i, (suffix, subtype, rate, label, speaker) in enumerate(clips):
        name = f"audio/clip{i}.{suffix}"
        _wav(raw / name, _tone(frequency=200 + 50 * i, rate=rate), rate=rate, subtype=subtype)
        rows += f"{name},{label},{speaker}\n"
    (raw / "labels.csv").write_text("path,label,speaker\n" + rows)
    data_dir = tmp_path / "tfds"
    result = _prepare_data(
        "--dataset=labelled_folder",
        f"--csv={raw / 'labels.csv'}",
        f"--data_dir={data_dir}",
        "--num_workers=0",
    )
    assert result.returncode == 0, result.stderr
    assert "kept          3" in result.stdout
    assert "resampled from 22050 Hz" in result.stdout
    # Training with config.data.csv set to the same CSV finds this build.
    data_config = helpers.load_config("default").data
    data_config.dataset, data_config.data_dir = "labelled_folder", str(data_dir)
    data_config.csv, data_config.class_names = str(raw / "labels.csv"), ("calm", "tense")
    builder = loading.load_builder(data_config)
    assert builder.info.features["label"].names == ["calm", "tense"]
    examples = list(tfds.as_numpy(builder.as_dataset(split=builders.SPLIT)))
    assert sorted(e["id"].decode() for e in examples) == ["clip0", "clip1", "clip2"]
    assert {e["mel"].shape[0] for e in examples} == {features.FeatureParams().n_mels}


@pytest.mark.slow
def test_prepare_data_fails_with_the_reason_on_stderr(tmp_path):
    result = _prepare_data("--dataset=ravdess", f"--manual_dir={tmp_path / 'missing'}")
    assert result.returncode == 1
    assert "prepare_data: ravdess:" in result.stderr and "missing" in result.stderr


def test_iemocap_builds_with_its_label_set_and_utterance_speakers(tmp_path):
    raw = tmp_path / "IEMOCAP_full_release"
    lines = {
        "Ses01F_impro01": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "exc")],
        "Ses01F_script01_1b": [
            ("Ses01F_script01_1b_M001", "fru"),
            ("Ses01F_script01_1b_F001", "sad"),
        ],
    }
    labels = raw / "Session1" / "dialog" / "EmoEvaluation"
    labels.mkdir(parents=True)
    for dialog, utterances in lines.items():
        text = "".join(
            f"[{i}.0 - {i + 1}.5]\t{utterance}\t{code}\t[2.5000, 2.5000, 2.5000]\n"
            for i, (utterance, code) in enumerate(utterances)
        )
        (labels / f"{dialog}.txt").write_text(text)
        for i, (utterance, _) in enumerate(utterances):
            wav = raw / "Session1" / "sentences" / "wav" / dialog / f"{utterance}.wav"
            _wav(wav, _tone(frequency=150 + 30 * i))
    for label_set, kept, names in (
        ("4class", 3, ["neutral", "happy", "angry", "sad"]),
        ("6class", 4, ["neutral", "happy", "excited", "angry", "sad", "frustrated"]),
    ):
        summary = builders.prepare(
            "iemocap", str(tmp_path / "tfds"), str(raw), PARAMS, num_workers=0, label_set=label_set
        )
        assert summary["kept"] == kept
        assert summary["speakers"] == ["Ses01F", "Ses01M"]  # M000 and M001 are Ses01M
        builder = tfds.builder(
            "iemocap",
            data_dir=str(tmp_path / "tfds"),
            config=builders.make_config("iemocap", PARAMS, label_set=label_set),
        )
        assert builder.info.features["label"].names == names


def test_linear_baseline_scores_every_test_example(synthetic_config):
    from emohrnet_jax import linear_baseline as baseline  # scikit-learn: only here

    mel = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(baseline.utterance_features(mel, "mean"), [1.5, 5.5, 9.5])
    stats = baseline.utterance_features(mel, "stats")
    np.testing.assert_allclose(stats[3:6], mel.std(axis=1))
    np.testing.assert_array_equal(stats[6:], [1.0, 1.0, 1.0, 4])
    for kind in ("mean", "stats"):
        result = baseline.run(synthetic_config, kind)
        assert result["num_examples"] == 16
        assert 0.0 <= result["ua"] <= 1.0


def test_label_maps_pair_shared_names_or_the_listed_pairs():
    ours = ("neutral", "happy", "angry", "sad")
    theirs = ("anger", "joy", "neutral", "calm")
    assert cross_corpus.parse_label_map("", theirs, ours) == {"neutral": "neutral"}
    assert cross_corpus.parse_label_map(" joy=happy,anger = angry", theirs, ours) == {
        "joy": "happy",
        "anger": "angry",
    }
    for text, match in [
        ("joy:happy", "not of the form"),
        ("fear=sad", "'fear' is not one of"),
        ("joy=glad", "'glad' is not one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            cross_corpus.parse_label_map(text, theirs, ours)
    with pytest.raises(ValueError, match="no class of"):
        cross_corpus.parse_label_map("", ("joy", "calm"), ours)


def test_an_unprepared_corpus_names_the_command_that_prepares_it(tmp_path):
    config = helpers.load_config("demo")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="--dataset=synthetic --data_dir=") as error:
        loading.load_builder(config.data, prepare_synthetic=False)
    assert "manual_dir" not in str(error.value)
    config.data.dataset, config.data.class_names = (
        "emovo",
        helpers.load_config("emovo").data.class_names,
    )
    with pytest.raises(FileNotFoundError, match="--dataset=emovo --manual_dir=RAW"):
        loading.load_builder(config.data)
