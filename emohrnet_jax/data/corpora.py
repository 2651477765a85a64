"""Corpus listings: a raw corpus folder -> labelled utterances, every unused file accounted for.

Only file names and label files are read here; audio is decoded elsewhere. Each listing keeps, by
reason, what it left out (song files, labels outside the class set, missing audio, ...), so that a
count that differs from the published one can be explained instead of silently accepted.
"""

import collections
import dataclasses
import os
import re
from collections.abc import Iterator, Sequence

from emohrnet_jax import files


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled audio file."""

    path: str  # absolute path of the audio file, as found on disk (not resolved through links)
    label: str  # class name, one of the corpus's class names
    speaker: str
    id: str  # IEMOCAP utterance name, otherwise the file stem


@dataclasses.dataclass
class Listing:
    """The utterances of a corpus, and what was left out of it."""

    utterances: list[Utterance]  # sorted by id
    excluded: dict[str, list[str]]  # reason -> sorted paths (or utterance ids)
    inputs: list[str] = dataclasses.field(default_factory=list)  # label files or CSV read
    # Utterance id -> official partition, for corpora released with one (`partitioned_corpora`).
    partitions: dict[str, str] = dataclasses.field(default_factory=dict)
    # Kept utterances worth counting, by what is noted of them (MSP-Podcast: speaker unknown).
    noted: dict[str, int] = dataclasses.field(default_factory=dict)


class UnknownLabelError(ValueError):
    """A file carries a label code that the corpus does not define."""


RAVDESS_CLASSES = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
EMOVO_CLASSES = ("disgust", "joy", "fear", "anger", "surprise", "sadness", "neutral")
_EMOVO_CODES = dict(
    zip(("dis", "gio", "pau", "rab", "sor", "tri", "neu"), EMOVO_CLASSES, strict=True)
)

IEMOCAP_LABEL_SETS: dict[str, dict[str, str]] = {
    # The standard set: exc is merged into happy, not substituted for it (a known trap).
    "4class": {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"},
    "4class_no_exc": {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"},
    "6class": {
        "neu": "neutral",
        "hap": "happy",
        "exc": "excited",
        "ang": "angry",
        "sad": "sad",
        "fru": "frustrated",
    },
}
IEMOCAP_CLASSES: dict[str, tuple[str, ...]] = {
    "4class": ("neutral", "happy", "angry", "sad"),
    "4class_no_exc": ("neutral", "happy", "angry", "sad"),
    "6class": ("neutral", "happy", "excited", "angry", "sad", "frustrated"),
}

# Reasons that other code (reports, tests) may look for by name.
MISSING_AUDIO_FILE = "missing audio file"
UNRECOGNIZED_FILE_NAME = "unrecognized file name"
HIDDEN_FILE = "hidden file"
DUPLICATE_FILE_NAME = "duplicate file name"
AUDIO_WITHOUT_LABEL = "audio file without label"
CONFLICTING_LABELS = "conflicting labels across label files"
NOT_UTF8_NAME = "file name not valid UTF-8"

_AUDIO_EXTENSIONS = (".wav",)

_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_RAVDESS_EXPECTED = "RAVDESS Actor_XX folders with 03-01-*.wav files (MM-VV-EE-II-SS-RR-AA.wav)"

_EMOVO_NAME = re.compile(r"^([a-z]+)-([fm]\d)-([a-z]+\d+)$", re.IGNORECASE)
_EMOVO_EXPECTED = "EMOVO <emo>-<speaker>-<sentence>.wav files, e.g. dis-m3-b1.wav"

_IEMOCAP_SESSION = re.compile(r"^Session\d+$")
# `[start - end]<ws>utterance<ws>code<ws>[v, a, d]`; the other lines are annotator details.
_IEMOCAP_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)")
_IEMOCAP_ID = re.compile(r"^(Ses\d+)[FM]_.+_([FM])\d+$")
_IEMOCAP_EXPECTED = (
    "IEMOCAP SessionN folders with dialog/EmoEvaluation/*.txt label files and "
    "sentences/wav/<dialog>/<utterance>.wav audio (the folder that holds Session1..Session5)"
)


def require_dir(path: str, expected: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: expected {expected}")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{path} is not a directory: expected {expected}")


def _audio_files(root: str) -> Iterator[str]:
    """Absolute paths of the audio files under `root`, recursively, in sorted order."""
    # Links are followed: corpora are often linked in from a shared disk.
    return (os.path.abspath(path) for path in files.walk_files(root, _AUDIO_EXTENSIONS))


def storable(path: str, excluded: dict[str, list[str]]) -> bool:
    """Whether `path` is valid UTF-8 (as tfds stores it); if not, it is counted in `excluded`."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # Shown with backslash escapes (\xff) so that the summary names the file readably.
        excluded[NOT_UTF8_NAME].append(os.fsencode(path).decode("utf-8", "backslashreplace"))
        return False
    return True


def named_files(
    root: str, pattern: re.Pattern, excluded: dict[str, list[str]]
) -> Iterator[tuple[str, str, re.Match]]:
    """(path, stem, match) of the audio files whose stem matches `pattern`; the rest are counted
    in `excluded` as names that are not UTF-8, hidden files or unrecognized names."""
    for path in _audio_files(root):
        if not storable(path, excluded):
            continue
        name = os.path.basename(path)
        stem = os.path.splitext(name)[0]
        if name.startswith("."):
            excluded[HIDDEN_FILE].append(path)
            continue
        match = pattern.match(stem)
        if match is None:
            excluded[UNRECOGNIZED_FILE_NAME].append(path)
            continue
        yield path, stem, match


def keep_first_of_each_id(
    utterances: list[Utterance], excluded: dict[str, list[str]]
) -> list[Utterance]:
    # Two copies of a file (an archive extracted twice) would put one recording in two splits.
    kept = {}
    for utterance in sorted(utterances, key=lambda u: u.path):
        if utterance.id in kept:
            excluded[DUPLICATE_FILE_NAME].append(utterance.path)
        else:
            kept[utterance.id] = utterance
    return list(kept.values())


def finish(
    utterances: list[Utterance],
    excluded: dict[str, list[str]],
    where: str,
    expected: str,
    inputs: Sequence[str] = (),
) -> Listing:
    excluded = {reason: sorted(items) for reason, items in sorted(excluded.items()) if items}
    if not utterances:
        summary = ", ".join(f"{reason}: {len(items)}" for reason, items in excluded.items())
        raise ValueError(
            f"no usable utterances in {where}: expected {expected}"
            + (f" (left out: {summary})" if summary else "")
        )
    return Listing(sorted(utterances, key=lambda u: u.id), excluded, sorted(inputs))


def ravdess(manual_dir: str, skip_unknown_labels: bool = False) -> Listing:
    """Lists the RAVDESS audio-only speech files (1440 in the full corpus) under `manual_dir`.

    Args:
      manual_dir: folder holding the Actor_XX folders, searched recursively.
      skip_unknown_labels: exclude (and count) files with an emotion code outside 01..08 instead of
        raising `UnknownLabelError`.

    Returns:
      The listing; speakers are "Actor_AA" taken from the file name, not the folder.
    """
    require_dir(manual_dir, _RAVDESS_EXPECTED)
    utterances, excluded = [], collections.defaultdict(list)
    for path, stem, match in named_files(manual_dir, _RAVDESS_NAME, excluded):
        modality, channel, emotion, _, _, _, actor = match.groups()
        if modality != "03":
            excluded[f"modality {modality} (not audio-only)"].append(path)
        elif channel != "01":
            song = " (song)" if channel == "02" else " (not speech)"
            excluded[f"vocal channel {channel}{song}"].append(path)
        elif not 1 <= int(emotion) <= len(RAVDESS_CLASSES):
            if not skip_unknown_labels:
                raise UnknownLabelError(
                    f"{path}: unknown RAVDESS emotion code {emotion!r} (expected 01..08)"
                )
            excluded[f"unknown emotion code {emotion}"].append(path)
        else:
            label = RAVDESS_CLASSES[int(emotion) - 1]
            utterances.append(Utterance(path, label, f"Actor_{actor}", stem))
    utterances = keep_first_of_each_id(utterances, excluded)
    return finish(utterances, excluded, manual_dir, _RAVDESS_EXPECTED)


def emovo(manual_dir: str, skip_unknown_labels: bool = False) -> Listing:
    """Lists the EMOVO files (588 in the full corpus) under `manual_dir`, searched recursively.

    Args:
      manual_dir: the EMOVO folder (speaker folders f1..m3 or the files directly).
      skip_unknown_labels: exclude (and count) files with an unknown emotion code instead of
        raising `UnknownLabelError`.

    Returns:
      The listing; speakers are the name's speaker field ("f1".."m3").
    """
    require_dir(manual_dir, _EMOVO_EXPECTED)
    utterances, excluded = [], collections.defaultdict(list)
    for path, stem, match in named_files(manual_dir, _EMOVO_NAME, excluded):
        code, speaker = match.group(1).lower(), match.group(2).lower()
        if code not in _EMOVO_CODES:
            if not skip_unknown_labels:
                raise UnknownLabelError(
                    f"{path}: unknown EMOVO emotion code {code!r} (expected one of "
                    f"{', '.join(_EMOVO_CODES)})"
                )
            excluded[f"unknown emotion code {code}"].append(path)
            continue
        utterances.append(Utterance(path, _EMOVO_CODES[code], speaker, stem))
    utterances = keep_first_of_each_id(utterances, excluded)
    return finish(utterances, excluded, manual_dir, _EMOVO_EXPECTED)


def _iemocap_label_lines(label_file: str) -> Iterator[tuple[str, str]]:
    """(utterance id, label code) of each label line of one EmoEvaluation file."""
    # Some copies carry stray bytes; a bad byte must not hide the label lines around it.
    with open(label_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = _IEMOCAP_LINE.match(line.strip())
            if match:
                yield match.group(1), match.group(2)


def _iemocap_label_files(session: str) -> list[str]:
    """The consensus label files of one session folder, sorted; none if it has no label folder."""
    label_dir = os.path.join(session, "dialog", "EmoEvaluation")
    if not os.path.isdir(label_dir):
        return []
    # Only the top-level files: Categorical/, Attribute/ and Self-evaluation/ hold the single
    # annotators' votes, not the consensus label.
    return sorted(
        os.path.join(label_dir, name)
        for name in os.listdir(label_dir)
        if name.endswith(".txt")
        and not name.startswith(".")
        and os.path.isfile(os.path.join(label_dir, name))
    )


def _iemocap_labels(sessions: list[str]) -> tuple[dict[str, tuple[str, str]], set[str], list[str]]:
    """Reads every session's label files.

    Returns:
      utterance id -> (code, session folder) of the first label seen, the ids whose label files
      disagree, and the label files read.
    """
    labels, conflicting, inputs = {}, set(), []
    for session in sessions:
        label_files = _iemocap_label_files(session)
        inputs.extend(label_files)
        for label_file in label_files:
            for utterance_id, code in _iemocap_label_lines(label_file):
                if utterance_id in labels and labels[utterance_id][0] != code:
                    conflicting.add(utterance_id)
                labels.setdefault(utterance_id, (code, session))
    return labels, conflicting, inputs


def _iemocap_utterances(
    labels: dict[str, tuple[str, str]],
    conflicting: set[str],
    label_set: str,
    excluded: dict[str, list[str]],
) -> list[Utterance]:
    """The labelled utterances of `label_set` whose audio file exists; the rest go to `excluded`."""
    codes = IEMOCAP_LABEL_SETS[label_set]
    utterances = []
    for utterance_id, (code, session) in labels.items():
        match = _IEMOCAP_ID.match(utterance_id)
        if utterance_id in conflicting:
            excluded[CONFLICTING_LABELS].append(utterance_id)
        elif match is None:
            excluded["unrecognized utterance id"].append(utterance_id)
        elif code not in codes:
            excluded[f"label {code} not in {label_set}"].append(utterance_id)
        else:
            # Script dialogs keep an extra part (Ses01F_script01_1b_F003): drop only the last one.
            dialog = utterance_id.rsplit("_", 1)[0]
            path = os.path.abspath(
                os.path.join(session, "sentences", "wav", dialog, utterance_id + ".wav")
            )
            if not storable(path, excluded):
                continue
            if os.path.isfile(path):
                speaker = match.group(1) + match.group(2)
                utterances.append(Utterance(path, codes[code], speaker, utterance_id))
            else:
                excluded[MISSING_AUDIO_FILE].append(path)
    return utterances


def _count_unlabelled_audio(
    sessions: list[str], labels: dict[str, tuple[str, str]], excluded: dict[str, list[str]]
) -> None:
    """Counts the sessions' audio files that no label line names (and hidden ones) in `excluded`."""
    for session in sessions:
        for path in _audio_files(os.path.join(session, "sentences", "wav")):
            name = os.path.basename(path)
            if not storable(path, excluded):
                continue
            if name.startswith("."):
                excluded[HIDDEN_FILE].append(path)
            elif os.path.splitext(name)[0] not in labels:
                excluded[AUDIO_WITHOUT_LABEL].append(path)


def iemocap(manual_dir: str, label_set: str = "4class") -> Listing:
    """Lists the IEMOCAP utterances of `label_set` (5531 for "4class" on the full corpus).

    Args:
      manual_dir: the folder that holds Session1..Session5 (IEMOCAP_full_release).
      label_set: a key of `IEMOCAP_LABEL_SETS`; utterances with other codes are excluded, counted
        per code.

    Returns:
      The listing; speakers are the session plus the gender letter of the utterance suffix
      (Ses01F_impro01_M012 -> Ses01M), not the dialog prefix.
    """
    if label_set not in IEMOCAP_LABEL_SETS:
        raise ValueError(
            f"unknown IEMOCAP label set {label_set!r}; choose one of {sorted(IEMOCAP_LABEL_SETS)}"
        )
    require_dir(manual_dir, _IEMOCAP_EXPECTED)
    sessions = sorted(
        os.path.join(manual_dir, name)
        for name in os.listdir(manual_dir)
        if _IEMOCAP_SESSION.match(name) and os.path.isdir(os.path.join(manual_dir, name))
    )
    excluded = collections.defaultdict(list)
    labels, conflicting, inputs = _iemocap_labels(sessions)
    utterances = _iemocap_utterances(labels, conflicting, label_set, excluded)
    _count_unlabelled_audio(sessions, labels, excluded)
    return finish(utterances, excluded, manual_dir, _IEMOCAP_EXPECTED, inputs)
