"""CREMA-D, EmoDB, TESS and SAVEE: listings on their full constructed trees, folds, one build.

The trees hold every file of each release (names or counts from EmoBox's listings of them: see
docs/data.md), as tiny real WAVs, so that the exact counts are tested, not just the parsing.
"""

import collections
import itertools
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from emohrnet_jax.audio import features
from emohrnet_jax.data import (
    acted_corpora,
    builders,
    corpora,
    protocols,
    splits,
)
from tests import helpers


def _write(folder, *names) -> None:
    """Writes the names as one WAV's hard links: thousands of files in a fraction of the time."""
    folder.mkdir(parents=True, exist_ok=True)
    if not names:
        return
    first = folder / names[0]
    first.write_bytes(helpers.wav_bytes(160))
    for name in names[1:]:
        os.link(first, folder / name)


def _counts(listing, field="label"):
    return dict(collections.Counter(getattr(u, field) for u in listing.utterances))


def _excluded(listing):
    return {reason: len(items) for reason, items in listing.excluded.items()}


def _check(listing, class_names):
    ids = [u.id for u in listing.utterances]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {u.label for u in listing.utterances} <= set(class_names)


# CREMA-D

# The 20 clips of the 91 x 82 grid that the release lacks (7462 - 20 = 7442): the grid less
# EmoBox's list of the release's AudioWAV (data/cremad/cremad.jsonl).
CREMA_D_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMA_D_MISSING = frozenset(
    ["1002_TIE_NEU_XX", "1076_ITS_NEU_XX"]
    + [
        f"{actor}_{sentence}_{emotion}_XX"
        for actor, sentence in (("1008", "WSI"), ("1009", "MTI"), ("1019", "ITH"))
        for emotion in CREMA_D_EMOTIONS
    ]
)


def _crema_d_grid() -> list[str]:
    """Each actor's clips: 11 sentences x 6 emotions at XX, and IEO at LO/MD/HI (NEU at XX)."""
    stems = []
    for actor, sentence, emotion in itertools.product(
        range(1001, 1092), acted_corpora.CREMA_D_SENTENCES, CREMA_D_EMOTIONS
    ):
        levels = ("LO", "MD", "HI") if sentence == "IEO" and emotion != "NEU" else ("XX",)
        stems += [f"{actor}_{sentence}_{emotion}_{level}" for level in levels]
    return stems


@pytest.fixture(scope="module")
def crema_d_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("crema_d")
    grid = _crema_d_grid()
    assert len(grid) == 7462
    _write(root / "AudioWAV", *(f"{s}.wav" for s in grid if s not in CREMA_D_MISSING))
    return root


def test_crema_d_full_release(crema_d_dir):
    listing = acted_corpora.crema_d(str(crema_d_dir))
    _check(listing, acted_corpora.CREMA_D_CLASSES)
    assert len(listing.utterances) == 7442 and listing.excluded == {}
    assert _counts(listing) == {name: 1271 for name in acted_corpora.CREMA_D_CLASSES} | {
        "neutral": 1087
    }
    per_actor = _counts(listing, "speaker")
    assert sorted(per_actor) == [str(a) for a in range(1001, 1092)]
    short = {"1002": 81, "1008": 76, "1009": 76, "1019": 76, "1076": 81}
    assert per_actor == {str(a): 82 for a in range(1001, 1092)} | short
    first = listing.utterances[0]
    assert (first.id, first.label, first.speaker) == ("1001_DFA_ANG_XX", "anger", "1001")


def test_crema_d_left_out_files_are_counted(tmp_path):
    audio = tmp_path / "AudioWAV"
    _write(audio, "1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "._1001_DFA_SAD_XX.wav")
    _write(audio, "1001_DFA_ANG.wav", "1001_DFA_ANG_ZZ.wav", "1001_XYZ_ANG_XX.wav")
    _write(tmp_path / "copy" / "AudioWAV", "1001_DFA_ANG_XX.wav")
    _write(tmp_path / "odd", "1001_DFA_SUR_XX.wav")
    with pytest.raises(corpora.UnknownLabelError, match=r"1001_DFA_SUR_XX\.wav.*'SUR'"):
        acted_corpora.crema_d(str(tmp_path))
    listing = acted_corpora.crema_d(str(tmp_path), skip_unknown_labels=True)
    assert [u.id for u in listing.utterances] == ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI"]
    assert listing.utterances[0].path == str(audio / "1001_DFA_ANG_XX.wav")
    assert _excluded(listing) == {
        corpora.DUPLICATE_FILE_NAME: 1,
        corpora.HIDDEN_FILE: 1,
        corpora.UNRECOGNIZED_FILE_NAME: 2,
        "unknown emotion code SUR": 1,
        "unknown sentence code XYZ": 1,
    }


# EmoDB

EMODB_LETTERS = "WLEAFTN"
# Clips per speaker and emotion letter (W, L, E, A, F, T, N), counted in EmoBox's listing of the
# release (data/emodb/emodb.jsonl); the totals are the published ones (535; W 127 ... N 79).
EMODB_COUNTS = {
    "03": (14, 5, 1, 4, 7, 7, 11),
    "08": (12, 10, 0, 6, 11, 9, 10),
    "09": (13, 4, 8, 1, 4, 4, 9),
    "10": (10, 8, 1, 8, 4, 3, 4),
    "11": (11, 8, 2, 10, 8, 7, 9),
    "12": (12, 5, 2, 6, 2, 4, 4),
    "13": (12, 10, 8, 7, 10, 5, 9),
    "14": (16, 8, 8, 12, 8, 10, 7),
    "15": (13, 9, 5, 8, 6, 4, 11),
    "16": (14, 14, 11, 7, 11, 9, 5),
}
EMODB_TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")


def _emodb_names(speaker: str, letter: str, count: int) -> list[str]:
    # A text's first take is version a, a second one b: up to 20 clips per speaker and emotion.
    takes = [(text, version) for version in "ab" for text in EMODB_TEXTS][:count]
    return [f"{speaker}{text}{letter}{version}.wav" for text, version in takes]


def test_emodb_full_release(tmp_path):
    for speaker, counts in EMODB_COUNTS.items():
        for letter, count in zip(EMODB_LETTERS, counts, strict=True):
            _write(tmp_path / "wav", *_emodb_names(speaker, letter, count))
    listing = acted_corpora.emodb(str(tmp_path))
    _check(listing, acted_corpora.EMODB_CLASSES)
    assert len(listing.utterances) == 535 and listing.excluded == {}
    published = dict(zip(acted_corpora.EMODB_CLASSES, (127, 81, 46, 69, 71, 62, 79), strict=True))
    assert _counts(listing) == published
    assert _counts(listing, "speaker") == {s: sum(c) for s, c in EMODB_COUNTS.items()}
    first = listing.utterances[0]
    assert (first.id, first.label, first.speaker) == ("03a01Aa", "fear", "03")


def test_emodb_left_out_files_are_counted(tmp_path):
    wav = tmp_path / "wav"
    _write(wav, "03a01Fa.wav", "16b10Wb.wav", ".03a01Ta.wav", "03a1Fa.wav", "readme.wav")
    _write(tmp_path / "copy" / "wav", "03a01Fa.wav")
    _write(wav, "03a01Xa.wav")
    with pytest.raises(corpora.UnknownLabelError, match=r"03a01Xa\.wav.*'X'"):
        acted_corpora.emodb(str(tmp_path))
    listing = acted_corpora.emodb(str(tmp_path), skip_unknown_labels=True)
    assert [(u.id, u.label) for u in listing.utterances] == [
        ("03a01Fa", "happiness"),
        ("16b10Wb", "anger"),
    ]
    assert _excluded(listing) == {
        corpora.DUPLICATE_FILE_NAME: 1,
        corpora.HIDDEN_FILE: 1,
        corpora.UNRECOGNIZED_FILE_NAME: 2,
        "unknown emotion code X": 1,
    }


# TESS

# The 200 NU-6 words of the release's file names (EmoBox's data/tess/tess.jsonl).
TESS_WORDS = """
back bar base bath bean beg bite boat bone book bought burn cab calm came cause chain chair chalk
chat check cheek chief choice cool dab date dead death deep dime dip ditch dodge dog doll door fail
fall far fat fit five food gap gas gaze germ get gin goal good goose gun half hall hash hate have
haze hire hit hole home hurl hush jail jar join judge jug juice keen keep keg kick kill king kite
knock late laud lean learn lease lid life limb live loaf long lore lose lot love luck make match
merge mess met mill mob mode mood moon mop mouse nag name near neat nice note numb pad page pain
pass pearl peg perch phone pick pike pole pool puff rag raid rain raise rat reach read red ring
ripe road room rose rot rough rush said sail search seize sell shack shall shawl sheep shirt
should shout size soap soup sour south sub such sure take talk tape team tell thin third thought
thumb time tip tire ton tool tough turn vine voice void vote wag walk wash week wheat when which
whip white wife wire witch yearn yes young youth
""".split()  # noqa: SIM905  (200 words read best as text)
# Folder spellings vary between copies (capitals, pleasant_surprise(d)): only file names count.
TESS_FOLDERS = {
    "OAF": ("OAF_angry", "OAF_disgust", "OAF_Fear", "OAF_happy", "OAF_neutral",
            "OAF_Pleasant_surprise", "OAF_Sad"),
    "YAF": ("YAF_angry", "YAF_disgust", "YAF_fear", "YAF_happy", "YAF_neutral",
            "YAF_pleasant_surprised", "YAF_sad"),
}  # fmt: skip
TESS_CODES = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")


def test_tess_full_release(tmp_path):
    assert len(TESS_WORDS) == len(set(TESS_WORDS)) == 200
    for speaker, folders in TESS_FOLDERS.items():
        for folder, code in zip(folders, TESS_CODES, strict=True):
            _write(tmp_path / folder, *(f"{speaker}_{word}_{code}.wav" for word in TESS_WORDS))
    listing = acted_corpora.tess(str(tmp_path))
    _check(listing, acted_corpora.TESS_CLASSES)
    assert len(listing.utterances) == 2800 and listing.excluded == {}
    assert _counts(listing) == {name: 400 for name in acted_corpora.TESS_CLASSES}
    assert _counts(listing, "speaker") == {"OAF": 1400, "YAF": 1400}
    by_id = {u.id: u for u in listing.utterances}
    assert by_id["YAF_youth_ps"].label == "pleasant_surprise"
    assert by_id["OAF_back_angry"].path.endswith("OAF_angry/OAF_back_angry.wav")


def test_tess_spellings_and_left_out_files(tmp_path):
    _write(
        tmp_path / "OAF_angry", "OAF_back_angry.wav", "oaf_bite_Angry.wav", "._OAF_bar_angry.wav"
    )
    _write(tmp_path / "YAF_pleasant_surprise", "YAF_back_pleasant_surprise.wav")
    _write(tmp_path / "YAF_pleasant_surprised", "YAF_bar_pleasant_surprised.wav", "YAF_base_PS.wav")
    _write(tmp_path / "copy" / "OAF_angry", "OAF_back_angry.wav", "OAF_BACK_ANGRY.wav")
    _write(tmp_path / "odd", "XAF_back_angry.wav", "OAF_back.wav", "OAF_back_bored.wav")
    with pytest.raises(corpora.UnknownLabelError, match=r"OAF_back_bored\.wav.*'bored'"):
        acted_corpora.tess(str(tmp_path))
    listing = acted_corpora.tess(str(tmp_path), skip_unknown_labels=True)
    assert [(u.id, u.speaker) for u in listing.utterances] == [
        ("OAF_back_angry", "OAF"),
        ("OAF_bite_angry", "OAF"),
        ("YAF_back_ps", "YAF"),
        ("YAF_bar_ps", "YAF"),
        ("YAF_base_ps", "YAF"),
    ]
    assert _counts(listing) == {"angry": 2, "pleasant_surprise": 3}
    assert _excluded(listing) == {
        corpora.DUPLICATE_FILE_NAME: 2,
        corpora.HIDDEN_FILE: 1,
        corpora.UNRECOGNIZED_FILE_NAME: 2,
        "unknown emotion code bored": 1,
    }


# SAVEE

SAVEE_PER_SPEAKER = {"a": 15, "d": 15, "f": 15, "h": 15, "n": 30, "sa": 15, "su": 15}


def _savee_names(prefix: str = "") -> list[str]:
    return [
        f"{prefix}{code}{n:02d}.wav"
        for code, count in SAVEE_PER_SPEAKER.items()
        for n in range(1, count + 1)
    ]


@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_savee_full_release(tmp_path, layout):
    for speaker in acted_corpora.SAVEE_SPEAKERS:
        if layout == "official":
            _write(tmp_path / "AudioData" / speaker, *_savee_names())
        else:
            _write(tmp_path / "ALL", *_savee_names(f"{speaker}_"))
    listing = acted_corpora.savee(str(tmp_path))
    _check(listing, acted_corpora.SAVEE_CLASSES)
    assert len(listing.utterances) == 480 and listing.excluded == {}
    names = dict(zip(SAVEE_PER_SPEAKER, acted_corpora.SAVEE_CLASSES, strict=True))
    assert _counts(listing) == {names[c]: 4 * n for c, n in SAVEE_PER_SPEAKER.items()}
    assert _counts(listing, "speaker") == dict.fromkeys(acted_corpora.SAVEE_SPEAKERS, 120)
    by_id = {u.id: u for u in listing.utterances}
    assert (by_id["KL_sa15"].label, by_id["KL_sa15"].speaker) == ("sadness", "KL")
    assert by_id["DC_su01"].label == "surprise" and by_id["JE_n30"].label == "neutral"


def test_savee_left_out_files_are_counted(tmp_path):
    _write(tmp_path / "AudioData" / "DC", "a01.wav", "sa02.wav", "._a03.wav", "a1.wav")
    _write(tmp_path / "AudioData" / "XY", "a01.wav")
    _write(tmp_path / "flat", "DC_a01.wav", "JK_n30.wav", "KLsu15.wav", "QQ_a01.wav", "n01.wav")
    _write(tmp_path / "AudioData" / "JE", "x01.wav")
    with pytest.raises(corpora.UnknownLabelError, match=r"x01\.wav.*'x'"):
        acted_corpora.savee(str(tmp_path))
    listing = acted_corpora.savee(str(tmp_path), skip_unknown_labels=True)
    assert [u.id for u in listing.utterances] == ["DC_a01", "DC_sa02", "JK_n30", "KL_su15"]
    assert _excluded(listing) == {
        corpora.DUPLICATE_FILE_NAME: 1,
        corpora.HIDDEN_FILE: 1,
        corpora.UNRECOGNIZED_FILE_NAME: 2,
        "no SAVEE speaker in the name or folder": 2,
        "unknown emotion code x": 1,
    }


# Folds and text units


@pytest.mark.parametrize(
    "dataset, speakers, folds",
    [
        ("crema_d", [str(a) for a in range(1001, 1092)], 5),
        ("emodb", list(EMODB_COUNTS), 10),
        ("savee", list(acted_corpora.SAVEE_SPEAKERS), 4),
    ],
)
def test_folds_are_speaker_independent(dataset, speakers, folds):
    assert splits.num_folds(dataset) == folds
    tested = []
    for fold in range(folds):
        split = splits.fold_speakers(dataset, speakers, fold)
        train, validation, test = (set(split[name]) for name in splits.SPLITS)
        assert train and validation and test
        assert not train & validation and not train & test and not validation & test
        assert train | validation | test == set(speakers)
        tested += split["test"]
    assert sorted(tested) == sorted(speakers)
    if dataset != "crema_d":  # Leave-one-speaker-out.
        assert all(len(g) == 1 for g in splits.speaker_groups(dataset, speakers))
    else:
        groups = splits.speaker_groups(dataset, speakers)
        assert [len(g) for g in groups] == [19, 18, 18, 18, 18] and groups[0][-1] == "1019"


def test_tess_has_no_speaker_protocol_but_random_folds():
    with pytest.raises(ValueError, match=r"TESS has 2 speakers.*protocol=random"):
        splits.fold_speakers("tess", ["OAF", "YAF"], 0)
    config = helpers.load_config("tess")
    assert config.data.protocol == "random"
    data = ml_collections.ConfigDict({"dataset": "tess", "fold": 0, "split_seed": 0})
    data.protocol = "speaker"
    with pytest.raises(ValueError, match="protocol=random"):
        protocols.num_folds(data)
    data.protocol = "random"
    rows = [
        protocols.Row(f"{s}_{w}_{c}", s, i)
        for s in ("OAF", "YAF")
        for w in TESS_WORDS[:10]
        for i, c in enumerate(TESS_CODES)
    ]
    split = protocols.fold_split(data, ["OAF", "YAF"], rows)
    assert split.about == {"protocol": "random", "speaker_independent": False}
    assert all(split.speakers[name] == ["OAF", "YAF"] for name in splits.SPLITS)


def test_text_units_of_the_ids():
    assert protocols.text_unit("crema_d", "1001_DFA_ANG_XX") == "DFA"
    assert protocols.text_unit("emodb", "03a01Fa") == "a01"
    assert protocols.text_unit("tess", "OAF_back_angry") == "back"
    assert protocols.text_unit("savee", "DC_a01") is None
    ids = {"train": ["03a01Fa", "08b10Wa"], "validation": [], "test": ["09a01Na", "10a02Ta"]}
    assert protocols.text_overlap("emodb", ids) == {"unit": "text", "test_utterances": 1, "of": 2}


# Builders and tools/prepare_data.py

PARAMS = features.FeatureParams(n_mels=32, n_fft=512, hop_length=256)


def _tone(path, frequency: float, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.6 * rate)) / rate
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * frequency * t), rate, subtype="PCM_16")


CLASSES = {
    "crema_d": acted_corpora.CREMA_D_CLASSES,
    "emodb": acted_corpora.EMODB_CLASSES,
    "tess": acted_corpora.TESS_CLASSES,
    "savee": acted_corpora.SAVEE_CLASSES,
}


@pytest.mark.parametrize(
    "name, cls", [("crema_d", "CremaD"), ("emodb", "Emodb"), ("tess", "Tess"), ("savee", "Savee")]
)
def test_builders_and_configs_use_the_contract_names(name, cls):
    assert builders.BUILDERS[name].__name__ == cls
    assert tfds.builder_cls(name).BUILDER_CONFIGS[0].feature_params == features.FeatureParams()
    config = helpers.load_config(name)
    assert config.data.dataset == name
    assert tuple(config.data.class_names) == CLASSES[name]
    assert config.model.num_classes == len(CLASSES[name])


@pytest.mark.slow
def test_emodb_and_savee_build_end_to_end(tmp_path):
    _tone(tmp_path / "emodb" / "wav" / "03a01Fa.wav", 220)
    _tone(tmp_path / "emodb" / "wav" / "08b10Wb.wav", 330)
    _tone(tmp_path / "savee" / "AudioData" / "DC" / "sa01.wav", 250, rate=44100)
    _tone(tmp_path / "savee" / "AudioData" / "KL" / "n30.wav", 270, rate=44100)
    expected = {
        "emodb": {"03a01Fa": ("happiness", "03"), "08b10Wb": ("anger", "08")},
        "savee": {"DC_sa01": ("sadness", "DC"), "KL_n30": ("neutral", "KL")},
    }
    for name, clips in expected.items():
        summary = builders.prepare(
            name, str(tmp_path / "tfds"), str(tmp_path / name), feature_params=PARAMS, num_workers=0
        )
        assert summary["kept"] == 2 and summary["speakers"] == sorted(s for _, s in clips.values())
        builder = tfds.builder(
            name, data_dir=str(tmp_path / "tfds"), config=builders.make_config(name, PARAMS)
        )
        names = list(CLASSES[name])
        assert builder.info.metadata["class_names"] == names
        assert builder.info.features["label"].names == names
        for example in tfds.as_numpy(builder.as_dataset(split=builders.SPLIT)):
            label, speaker = clips[example["id"].decode()]
            assert names[example["label"]] == label and example["speaker"].decode() == speaker
            assert example["mel"].shape == (32, example["num_frames"])
            assert example["num_frames"] == 1 + int(0.6 * 16000) // 256


@pytest.mark.slow
def test_prepare_data_builds_tess(tmp_path):
    _tone(tmp_path / "raw" / "OAF_Fear" / "OAF_back_fear.wav", 220, rate=24414)
    _tone(tmp_path / "raw" / "YAF_pleasant_surprised" / "YAF_back_ps.wav", 330, rate=24414)
    tool = helpers.CONFIGS.parent / "tools" / "prepare_data.py"
    args = ["--dataset=tess", f"--manual_dir={tmp_path / 'raw'}", f"--data_dir={tmp_path / 'out'}"]
    result = subprocess.run(
        [sys.executable, str(tool), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "kept          2   speakers: 2" in result.stdout
