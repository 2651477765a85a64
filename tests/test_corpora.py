"""Tests of the corpus listings on small file trees with the corpora's real layouts and names."""

import collections
import os

import pytest

from emohrnet_jax.data import corpora, csv_corpus
from tests.helpers import wav_bytes, write_wav


def _counts(listing: corpora.Listing, field: str = "label") -> dict[str, int]:
    return dict(collections.Counter(getattr(u, field) for u in listing.utterances))


def _excluded_counts(listing: corpora.Listing) -> dict[str, int]:
    return {reason: len(items) for reason, items in listing.excluded.items()}


def _check_invariants(listing: corpora.Listing, class_names) -> None:
    ids = [u.id for u in listing.utterances]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for u in listing.utterances:
        assert os.path.isabs(u.path) and os.path.isfile(u.path), u
        assert u.label in class_names, u
    for items in listing.excluded.values():
        assert items == sorted(items) and items


# RAVDESS


def _ravdess_name(
    modality=3, channel=1, emotion=1, intensity=1, statement=1, repetition=1, actor=1
):
    fields = (modality, channel, emotion, intensity, statement, repetition, actor)
    return "-".join(f"{field:02d}" for field in fields) + ".wav"


@pytest.fixture
def ravdess_dir(tmp_path):
    root = tmp_path / "ravdess"
    for emotion in range(1, 9):
        write_wav(root / "Actor_01" / _ravdess_name(emotion=emotion, actor=1))
        write_wav(
            root
            / "Actor_02"
            / _ravdess_name(emotion=emotion, intensity=2 - (emotion == 1), actor=2)
        )
    # Filed under the wrong actor: the speaker must come from the name.
    write_wav(root / "Actor_01" / _ravdess_name(emotion=5, actor=3))
    write_wav(root / "Actor_01" / _ravdess_name(channel=2, emotion=1, actor=1))
    write_wav(root / "Actor_02" / _ravdess_name(channel=2, emotion=3, actor=2))
    write_wav(root / "Actor_01" / _ravdess_name(modality=1, actor=1))
    write_wav(root / "Actor_02" / _ravdess_name(modality=2, emotion=3, actor=2))
    write_wav(root / "Actor_01" / "recording.wav")
    write_wav(root / "Actor_01" / "readme.txt", b"not audio")
    write_wav(root / ".DS_Store", b"\0")
    write_wav(root / "__MACOSX" / "Actor_01" / ("._" + _ravdess_name()), b"\0")
    # A second copy of an Actor_01 file (an archive extracted twice).
    write_wav(root / "copy" / "Actor_01" / _ravdess_name(emotion=2, actor=1))
    return root


def test_ravdess_small_tree(ravdess_dir):
    listing = corpora.ravdess(str(ravdess_dir))
    _check_invariants(listing, corpora.RAVDESS_CLASSES)
    assert len(listing.utterances) == 17
    assert _counts(listing) == {
        "neutral": 2,
        "calm": 2,
        "happy": 2,
        "sad": 2,
        "angry": 3,
        "fearful": 2,
        "disgust": 2,
        "surprised": 2,
    }
    assert _counts(listing, "speaker") == {"Actor_01": 8, "Actor_02": 8, "Actor_03": 1}
    by_id = {u.id: u for u in listing.utterances}
    misfiled = by_id["03-01-05-01-01-01-03"]
    assert (misfiled.label, misfiled.speaker) == ("angry", "Actor_03")
    assert misfiled.path == str(ravdess_dir / "Actor_01" / "03-01-05-01-01-01-03.wav")
    assert by_id["03-01-08-02-01-01-02"].label == "surprised"
    assert by_id["03-01-02-01-01-01-01"].path == str(
        ravdess_dir / "Actor_01" / "03-01-02-01-01-01-01.wav"
    )
    assert _excluded_counts(listing) == {
        "duplicate file name": 1,
        "hidden file": 1,
        "modality 01 (not audio-only)": 1,
        "modality 02 (not audio-only)": 1,
        "unrecognized file name": 1,
        "vocal channel 02 (song)": 2,
    }
    assert listing.excluded["unrecognized file name"] == [
        str(ravdess_dir / "Actor_01" / "recording.wav")
    ]
    assert listing.excluded["duplicate file name"] == [
        str(ravdess_dir / "copy" / "Actor_01" / "03-01-02-01-01-01-01.wav")
    ]


def test_ravdess_unknown_emotion(ravdess_dir):
    bad = write_wav(ravdess_dir / "Actor_01" / _ravdess_name(emotion=9, actor=1))
    with pytest.raises(corpora.UnknownLabelError, match=r"03-01-09-01-01-01-01\.wav.*'09'"):
        corpora.ravdess(str(ravdess_dir))
    listing = corpora.ravdess(str(ravdess_dir), skip_unknown_labels=True)
    assert len(listing.utterances) == 17
    assert listing.excluded["unknown emotion code 09"] == [bad]


def test_ravdess_full_grid(tmp_path):
    tiny = wav_bytes(frames=4)
    for actor in range(1, 25):
        folder = tmp_path / f"Actor_{actor:02d}"
        folder.mkdir()
        for emotion in range(1, 9):
            # Neutral has no strong intensity.
            for intensity in (1,) if emotion == 1 else (1, 2):
                for statement in (1, 2):
                    for repetition in (1, 2):
                        name = _ravdess_name(3, 1, emotion, intensity, statement, repetition, actor)
                        (folder / name).write_bytes(tiny)
    listing = corpora.ravdess(str(tmp_path))
    assert len(listing.utterances) == 1440
    assert listing.excluded == {}
    assert _counts(listing) == {
        name: 96 if name == "neutral" else 192 for name in corpora.RAVDESS_CLASSES
    }
    assert _counts(listing, "speaker") == {f"Actor_{actor:02d}": 60 for actor in range(1, 25)}


# IEMOCAP

_EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
_ANNOTATOR_LINES = (
    "C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nC-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 3; act 2; dom  1;\t()\n\n"
)

_IEMOCAP_LABELS = {
    "Session1": {
        "Ses01F_impro01": [
            ("Ses01F_impro01_F000", "neu"),
            ("Ses01F_impro01_F001", "hap"),
            ("Ses01F_impro01_M000", "exc"),
            ("Ses01F_impro01_M001", "ang"),
            ("Ses01F_impro01_M002", "fru"),
            ("Ses01F_impro01_F002", "xxx"),
            ("Ses01F_impro01_M003", "sad"),  # its wav is missing
        ],
        "Ses01F_script01_1b": [
            ("Ses01F_script01_1b_F003", "sad"),
            ("Ses01F_script01_1b_M012", "neu"),
            ("Ses01F_script01_1b_F004", "exc"),
        ],
    },
    "Session2": {
        "Ses02M_impro03": [
            ("Ses02M_impro03_F000", "ang"),
            ("Ses02M_impro03_M000", "hap"),
            ("Ses02M_impro03_M001", "neu"),
            ("Ses02M_impro03_F001", "sur"),
            ("Ses02M_impro03_F002", "exc"),
        ],
    },
}
_IEMOCAP_MISSING = "Ses01F_impro01_M003"


def _emo_evaluation(lines) -> str:
    text = _EMO_HEADER
    for i, (utterance, code) in enumerate(lines):
        text += f"[{i * 3.1 + 6.2901:.4f} - {i * 3.1 + 8.2357:.4f}]\t{utterance}\t{code}\t"
        text += "[2.5000, 2.5000, 2.5000]\n" + _ANNOTATOR_LINES
    return text


@pytest.fixture
def iemocap_dir(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    for session, dialogs in _IEMOCAP_LABELS.items():
        labels = root / session / "dialog" / "EmoEvaluation"
        labels.mkdir(parents=True)
        for dialog, lines in dialogs.items():
            (labels / f"{dialog}.txt").write_text(_emo_evaluation(lines))
            for utterance, _ in lines:
                if utterance != _IEMOCAP_MISSING:
                    write_wav(root / session / "sentences" / "wav" / dialog / f"{utterance}.wav")
    labels = root / "Session1" / "dialog" / "EmoEvaluation"
    # Per-annotator files: if they were read, Ses01F_impro01_F000 would get a second label.
    decoy = _emo_evaluation([("Ses01F_impro01_F000", "ang")])
    for sub in ("Categorical", "Attribute", "Self-evaluation"):
        (labels / sub).mkdir()
        (labels / sub / "Ses01F_impro01_e2_cat.txt").write_text(decoy)
    # The same label line in a second file must not create a second utterance.
    session2 = root / "Session2" / "dialog" / "EmoEvaluation"
    (session2 / "Ses02M_impro03_copy.txt").write_text(
        _emo_evaluation([("Ses02M_impro03_M001", "neu")])
    )
    write_wav(
        root / "Session2" / "sentences" / "wav" / "Ses02M_impro03" / "Ses02M_impro03_M005.wav"
    )
    return root


@pytest.mark.parametrize(
    "label_set, labels, excluded",
    [
        (
            "4class",
            {"neutral": 3, "happy": 5, "angry": 2, "sad": 1},
            {"label fru not in 4class": 1, "label sur not in 4class": 1},
        ),
        (
            "4class_no_exc",
            {"neutral": 3, "happy": 2, "angry": 2, "sad": 1},
            {
                "label exc not in 4class_no_exc": 3,
                "label fru not in 4class_no_exc": 1,
                "label sur not in 4class_no_exc": 1,
            },
        ),
        (
            "6class",
            {"neutral": 3, "happy": 2, "excited": 3, "angry": 2, "sad": 1, "frustrated": 1},
            {"label sur not in 6class": 1},
        ),
    ],
)
def test_iemocap_label_sets(iemocap_dir, label_set, labels, excluded):
    listing = corpora.iemocap(str(iemocap_dir), label_set)
    _check_invariants(listing, corpora.IEMOCAP_CLASSES[label_set])
    assert _counts(listing) == labels
    assert len(listing.utterances) == sum(labels.values())
    assert _excluded_counts(listing) == {
        "audio file without label": 1,
        "missing audio file": 1,
        f"label xxx not in {label_set}": 1,
        **excluded,
    }
    assert set(corpora.IEMOCAP_LABEL_SETS[label_set].values()) == set(
        corpora.IEMOCAP_CLASSES[label_set]
    )


def test_iemocap_speakers_paths_and_exclusions(iemocap_dir):
    listing = corpora.iemocap(str(iemocap_dir))
    by_id = {u.id: u for u in listing.utterances}
    assert by_id["Ses01F_impro01_F000"].label == "neutral"  # the decoy files were not read
    assert by_id["Ses01F_impro01_M000"].label == "happy"  # exc merged into happy
    # The speaker is the gender of the utterance suffix, not the dialog prefix.
    assert by_id["Ses01F_impro01_M001"].speaker == "Ses01M"
    assert by_id["Ses02M_impro03_F000"].speaker == "Ses02F"
    script = by_id["Ses01F_script01_1b_M012"]
    assert script.speaker == "Ses01M"
    assert script.path == str(
        iemocap_dir
        / "Session1"
        / "sentences"
        / "wav"
        / "Ses01F_script01_1b"
        / "Ses01F_script01_1b_M012.wav"
    )
    assert _counts(listing, "speaker") == {"Ses01F": 4, "Ses01M": 3, "Ses02F": 2, "Ses02M": 2}
    assert listing.excluded["missing audio file"] == [
        str(
            iemocap_dir
            / "Session1"
            / "sentences"
            / "wav"
            / "Ses01F_impro01"
            / "Ses01F_impro01_M003.wav"
        )
    ]
    assert listing.excluded["label xxx not in 4class"] == ["Ses01F_impro01_F002"]
    assert listing.excluded["audio file without label"][0].endswith("Ses02M_impro03_M005.wav")


def test_iemocap_conflicting_labels(iemocap_dir):
    session1 = iemocap_dir / "Session1" / "dialog" / "EmoEvaluation"
    (session1 / "Ses01F_impro01_edit.txt").write_text(
        _emo_evaluation([("Ses01F_impro01_F001", "sad")])
    )
    listing = corpora.iemocap(str(iemocap_dir))
    assert "Ses01F_impro01_F001" not in {u.id for u in listing.utterances}
    assert listing.excluded["conflicting labels across label files"] == ["Ses01F_impro01_F001"]


def test_iemocap_unknown_label_set(iemocap_dir):
    with pytest.raises(ValueError, match="5class"):
        corpora.iemocap(str(iemocap_dir), "5class")


# EMOVO

_EMOVO_SENTENCES = (
    "b1",
    "b2",
    "b3",
    "d1",
    "d2",
    "l1",
    "l2",
    "l3",
    "l4",
    "n1",
    "n2",
    "n3",
    "n4",
    "n5",
)


def test_emovo_small_tree(tmp_path):
    names = {
        "dis-m3-b1": ("disgust", "m3"),
        "gio-f1-b1": ("joy", "f1"),
        "pau-f1-d2": ("fear", "f1"),
        "rab-m3-l4": ("anger", "m3"),
        "sor-f1-n5": ("surprise", "f1"),
        "tri-m3-n1": ("sadness", "m3"),
        "neu-f1-b2": ("neutral", "f1"),
        "NEU-M3-b3": ("neutral", "m3"),
    }
    for name, (_, speaker) in names.items():
        write_wav(tmp_path / speaker.lower() / f"{name}.wav")
    write_wav(tmp_path / "m3" / "dis-m3.wav")
    write_wav(tmp_path / "documents" / "readme.txt", b"text")
    listing = corpora.emovo(str(tmp_path))
    _check_invariants(listing, corpora.EMOVO_CLASSES)
    assert {u.id: (u.label, u.speaker) for u in listing.utterances} == names
    assert listing.excluded == {"unrecognized file name": [str(tmp_path / "m3" / "dis-m3.wav")]}

    bad = write_wav(tmp_path / "f1" / "xyz-f1-b1.wav")
    with pytest.raises(corpora.UnknownLabelError, match=r"xyz-f1-b1\.wav.*'xyz'"):
        corpora.emovo(str(tmp_path))
    listing = corpora.emovo(str(tmp_path), skip_unknown_labels=True)
    assert len(listing.utterances) == len(names)
    assert listing.excluded["unknown emotion code xyz"] == [bad]


def test_emovo_full_grid(tmp_path):
    tiny = wav_bytes(frames=4)
    codes = ("dis", "gio", "pau", "rab", "sor", "tri", "neu")
    speakers = ("f1", "f2", "f3", "m1", "m2", "m3")
    for speaker in speakers:
        (tmp_path / speaker).mkdir()
        for code in codes:
            for sentence in _EMOVO_SENTENCES:
                (tmp_path / speaker / f"{code}-{speaker}-{sentence}.wav").write_bytes(tiny)
    listing = corpora.emovo(str(tmp_path))
    assert len(listing.utterances) == 588
    assert listing.excluded == {}
    assert _counts(listing) == {name: 84 for name in corpora.EMOVO_CLASSES}
    assert _counts(listing, "speaker") == {speaker: 98 for speaker in speakers}


# Errors shared by the corpus folders


@pytest.mark.parametrize(
    "lister, expected",
    [(corpora.ravdess, "Actor_XX"), (corpora.iemocap, "Session"), (corpora.emovo, "dis-m3-b1")],
)
def test_missing_and_empty_folder(tmp_path, lister, expected):
    with pytest.raises(FileNotFoundError, match=f"does not exist: expected .*{expected}"):
        lister(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=f"no usable utterances in .*empty: expected .*{expected}"):
        lister(str(tmp_path / "empty"))


def test_empty_listing_names_what_was_left_out(tmp_path):
    write_wav(tmp_path / "Actor_01" / _ravdess_name(channel=2))
    with pytest.raises(ValueError, match=r"left out: vocal channel 02 \(song\): 1"):
        corpora.ravdess(str(tmp_path))


# Labelled folder


@pytest.fixture
def labelled_dir(tmp_path):
    write_wav(tmp_path / "audio" / "s1" / "a.wav")
    write_wav(tmp_path / "audio" / "s1" / "b.wav")
    absolute = write_wav(tmp_path / "elsewhere" / "c.wav")
    (tmp_path / "data.csv").write_text(
        "path,label,speaker,notes\n"
        "audio/s1/a.wav,happy,s1,loud\n"
        "audio/s1/b.wav,sad,s1,\n"
        f"{absolute},happy,s2,\n"
        "audio/s2/gone.wav,sad,s2,\n"
    )
    return tmp_path


def test_labelled_folder(labelled_dir):
    listing, class_names = csv_corpus.labelled_folder(str(labelled_dir / "data.csv"))
    assert class_names == ("happy", "sad")
    _check_invariants(listing, class_names)
    assert [(u.id, u.label, u.speaker) for u in listing.utterances] == [
        ("a", "happy", "s1"),
        ("b", "sad", "s1"),
        ("c", "happy", "s2"),
    ]
    assert listing.utterances[0].path == str(labelled_dir / "audio" / "s1" / "a.wav")
    assert listing.excluded == {
        "missing audio file": [str(labelled_dir / "audio" / "s2" / "gone.wav")]
    }

    listing, class_names = csv_corpus.labelled_folder(
        str(labelled_dir / "data.csv"), class_names=["sad", "happy", "angry"]
    )
    assert class_names == ("sad", "happy", "angry")
    assert len(listing.utterances) == 3


def test_labelled_folder_unknown_labels(labelled_dir):
    csv_path = str(labelled_dir / "data.csv")
    with pytest.raises(corpora.UnknownLabelError, match=r"b\.wav has label 'sad'"):
        csv_corpus.labelled_folder(csv_path, class_names=("happy",))
    listing, _ = csv_corpus.labelled_folder(csv_path, ("happy",), skip_unknown_labels=True)
    assert [u.id for u in listing.utterances] == ["a", "c"]
    assert _excluded_counts(listing) == {"label sad not in class names": 2}


def test_labelled_folder_ids(tmp_path):
    write_wav(tmp_path / "x" / "take.wav")
    write_wav(tmp_path / "y" / "take.wav")
    (tmp_path / "same.csv").write_text("path,label,speaker\nx/take.wav,a,s1\ny/take.wav,b,s2\n")
    with pytest.raises(ValueError, match=r"same\.csv:3: id 'take' already used on line 2"):
        csv_corpus.labelled_folder(str(tmp_path / "same.csv"))
    (tmp_path / "ids.csv").write_text(
        "id,path,label,speaker\nx1,x/take.wav,a,s1\ny1,y/take.wav,b,s2\n"
    )
    listing, _ = csv_corpus.labelled_folder(str(tmp_path / "ids.csv"))
    assert [u.id for u in listing.utterances] == ["x1", "y1"]


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("path,label\na.wav,happy\n", ValueError, "missing column.* speaker"),
        ("path,label,speaker\na.wav,happy,s1\na.wav,,s1\n", ValueError, r"bad\.csv:3: empty label"),
        ("path,label,speaker\na.wav,happy, \n", ValueError, r"bad\.csv:2: empty speaker"),
        ("path,label,speaker\nnothing.wav,happy,s1\n", ValueError, "no usable utterances"),
    ],
)
def test_labelled_folder_errors(tmp_path, text, error, message):
    write_wav(tmp_path / "a.wav")
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(error, match=message):
        csv_corpus.labelled_folder(str(tmp_path / "bad.csv"))


def test_labelled_folder_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a CSV with header path,label,speaker"):
        csv_corpus.labelled_folder(str(tmp_path / "labels.csv"))


def test_labelled_folder_duplicate_rows(tmp_path):
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    rows = ["a.wav,x,s1", "b.wav,y,s1", "./a.wav,y,s2"]  # the same file, spelled another way
    (tmp_path / "dup.csv").write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"line 4 lists the same file as line 2 \(.*a\.wav\)"):
        csv_corpus.labelled_folder(str(tmp_path / "dup.csv"))
    # An id column does not let the same file in twice.
    rows = ["1,a.wav,x,s1", "2,a.wav,y,s1"]
    (tmp_path / "ids.csv").write_text("id,path,label,speaker\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"line 3 lists the same file as line 2 .*: remove one"):
        csv_corpus.labelled_folder(str(tmp_path / "ids.csv"))


def test_labelled_folder_csv_that_is_not_utf8(tmp_path):
    write_wav(tmp_path / "café.wav")
    text = "path,label,speaker\ncafé.wav,joy,s1\n"
    (tmp_path / "latin1.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv:2: not UTF-8 \(byte 0xe9 at offset 22\)"):
        csv_corpus.labelled_folder(str(tmp_path / "latin1.csv"))
    (tmp_path / "excel.csv").write_bytes(text.encode("utf-8-sig"))  # BOM: still fine
    assert len(csv_corpus.labelled_folder(str(tmp_path / "excel.csv"))[0].utterances) == 1


def _undecodable(folder, name: bytes) -> str:
    path = os.path.join(os.fsencode(str(folder)), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(wav_bytes())
    return os.fsdecode(path)


def test_names_that_are_not_utf8_are_excluded_and_shown_escaped(ravdess_dir, iemocap_dir, tmp_path):
    reason = "file name not valid UTF-8"
    _undecodable(ravdess_dir, b"Actor_01\xff/" + _ravdess_name(emotion=2).encode())
    listing = corpora.ravdess(str(ravdess_dir))
    assert listing.excluded[reason] == [f"{ravdess_dir}/Actor_01\\xff/03-01-02-01-01-01-01.wav"]
    _undecodable(tmp_path / "emovo", b"f1/dis-f1-b1.wav")
    _undecodable(tmp_path / "emovo", b"f1\xff/gio-f1-b1.wav")
    assert corpora.emovo(str(tmp_path / "emovo")).excluded == {
        reason: [f"{tmp_path}/emovo/f1\\xff/gio-f1-b1.wav"]
    }
    wav = iemocap_dir / "Session1" / "sentences" / "wav"
    _undecodable(wav, b"Ses01F_impro01/Ses01F_impro01_F9\xff.wav")
    assert corpora.iemocap(str(iemocap_dir)).excluded[reason] == [
        f"{wav}/Ses01F_impro01/Ses01F_impro01_F9\\xff.wav"
    ]
    # A CSV in a folder whose name is not UTF-8: each row is counted, none crashes the listing.
    folder = os.path.dirname(_undecodable(tmp_path, b"clips\xff/a.wav"))
    with open(os.path.join(folder, "clips.csv"), "w") as file:
        file.write("path,label,speaker\na.wav,x,s1\n")
    with pytest.raises(ValueError, match=f"left out: {reason}: 1"):
        csv_corpus.labelled_folder(os.path.join(folder, "clips.csv"))
