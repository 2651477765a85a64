"""Which stored utterances form a fold's train, validation and test splits, under which protocol.

`config.data.protocol` chooses:

- `speaker` (default): the speaker-independent folds of `splits.fold_speakers`.
- `random`: a stratified utterance-level split, as many published tables used. Every speaker is
  in every split (speaker-dependent), so its scores are not comparable with speaker-independent
  ones. The utterances of each class, in id order, are shuffled by `config.data.split_seed` (not
  `config.seed`: the folds of a cross-validation stay the same for every training seed) and dealt
  to `num_folds` folds in turn; fold k tests on fold k, validates on fold k + 1 and trains on the
  rest, so every split has the corpus's class proportions (within one utterance per class).
- `emobox`: an EmoBox fold file (`emobox`, `config.data.fold_file`). EmoBox has no validation
  split: as many speakers as its test split has (IEMOCAP: sessions) are drawn by `split_seed` from
  its train speakers that are not test speakers. `config.data.fold` is not read.
- `official`: the partitions a corpus is released with (ESD, MSP-Podcast; the only protocol of
  MSP-Podcast), no re-splitting: train, validation and test are the `OFFICIAL_PARTITIONS`, the
  test one `config.data.test_partition` where set. Speaker-independent only if no speaker is in
  two splits (computed; ESD's partitions split every speaker's files, so it warns, as `random`).
  `config.data.fold` is not read.

`config.data.iemocap_dialogs="improvised"` keeps only IEMOCAP's improvised dialogs in every split.
No TensorFlow here: the pipeline passes the stored utterances in (`Row`s).
"""

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from emohrnet_jax import config_check, mixture_spec
from emohrnet_jax.data import emobox, splits

RANDOM_WARNING = (
    "config.data.protocol='random' splits utterances, not speakers: every test speaker is also a "
    "training speaker, so these results are speaker-dependent and not comparable with "
    "speaker-independent ones"
)
# Corpus -> its (train, validation, test) partitions; the first present of several names is used
# (MSP-Podcast's validation partition: Development; an older release's name: Validation).
OFFICIAL_PARTITIONS = {
    "esd": (("train",), ("evaluation",), ("test",)),
    "msp_podcast": (("Train",), ("Development", "Validation"), ("Test1",)),
}
OFFICIAL_WARNING = (
    "the official partitions of %s share speakers between splits: these results are "
    "speaker-dependent and not comparable with speaker-independent ones"
)
# Ses01F_impro01_F000, Ses01F_script01_1_M012: the dialog's name between session and turn.
_IEMOCAP_ID = re.compile(r"Ses\d\d[FM]_(.+)_[FM]\d+")
# What text_overlap compares: RAVDESS's statement (2), EMOVO's sentence (14), IEMOCAP's script,
# CREMA-D's sentence (12), EmoDB's text (10), TESS's word (200).
TEXT_UNITS = {
    "ravdess": "sentence",
    "emovo": "sentence",
    "iemocap": "script",
    "crema_d": "sentence",
    "emodb": "text",
    "tess": "word",
}


@dataclasses.dataclass(frozen=True)
class Row:
    """A stored utterance: its id, speaker and stored label index."""

    id: str
    speaker: str
    label: int


@dataclasses.dataclass(frozen=True)
class FoldSplit:
    """A fold's splits: each split's speakers and, unless the speakers alone select it, its
    utterance ids; `about` is what splits.json and results.json say of the protocol."""

    speakers: dict[str, list[str]]
    ids: dict[str, list[str]] | None
    about: dict[str, Any]


def num_folds(data_config: ml_collections.ConfigDict) -> int:
    """The number of folds of `config.data`'s protocol: an EmoBox fold file is one fold (and a
    mixture's, `mixture_spec.num_folds`)."""
    if mixture_spec.is_mixture(data_config):
        return mixture_spec.num_folds(data_config)
    protocol, requested = _protocol(data_config), data_config.get("num_folds")
    if protocol in ("emobox", "official"):
        return 1
    if protocol == "random":
        folds = splits.GENERIC_NUM_FOLDS if requested is None else requested
        if folds < 3:
            raise ValueError(f"need at least 3 folds (train, validation, test), got {folds}")
        return folds
    return splits.num_folds(data_config.dataset, requested)


def needs_rows(data_config: ml_collections.ConfigDict) -> bool:
    """Whether the fold is chosen by utterance (the pipeline must list the stored ones)."""
    return _protocol(data_config) != "speaker" or _dialogs(data_config) != "all"


def fold_split(
    data_config: ml_collections.ConfigDict,
    speakers: Sequence[str],
    rows: Sequence[Row] = (),
    partitions: dict[str, Sequence[str]] | None = None,
) -> FoldSplit:
    """The splits of fold `config.data.fold` under `config.data.protocol`.

    Args:
      data_config: `config.data`.
      speakers: the corpus's speakers.
      rows: every stored utterance, in stored order (needed where `needs_rows`).
      partitions: the build's official partitions, `{partition: ids}` (its metadata's
        `partitions`; needed by `official`).

    Raises:
      ValueError: a protocol, fold or fold file that cannot give three non-empty splits.
    """
    config_check.check_protocol(data_config)
    protocol, dialogs = _protocol(data_config), _dialogs(data_config)
    about: dict[str, Any] = {"protocol": protocol}
    if data_config.dataset == "iemocap":
        about["iemocap_dialogs"] = dialogs
    kept = [row for row in rows if dialogs == "all" or is_improvised(row.id)]
    if protocol == "random":
        logging.warning(RANDOM_WARNING)
        ids = random_split(kept, data_config.fold, num_folds(data_config), _seed(data_config))
        split = _from_ids(kept, ids)
        return FoldSplit(split.speakers, ids, about | {"speaker_independent": False})
    if protocol == "official":
        ids, official = official_split(data_config, kept, partitions)
        split = _from_ids(kept, ids)
        independent = not any(
            set(split.speakers[a]) & set(split.speakers[b])
            for a, b in (("train", "validation"), ("train", "test"), ("validation", "test"))
        )
        if not independent:
            logging.warning(OFFICIAL_WARNING, data_config.dataset)
        about |= {"speaker_independent": independent, "official": official}
        return FoldSplit(split.speakers, ids, about)
    if protocol == "emobox":
        # Matched against every stored utterance: a scripted line left out is not "unmatched".
        ids, about_file = emobox.split(data_config, rows, _seed(data_config))
        kept_ids = {row.id for row in kept}
        ids = {name: [i for i in group if i in kept_ids] for name, group in ids.items()}
        split = _from_ids(kept, ids)
        independent = not set(split.speakers["test"]) & {
            s for name in ("train", "validation") for s in split.speakers[name]
        }
        about |= {"speaker_independent": independent, "emobox": about_file}
        return FoldSplit(split.speakers, ids, about)
    by_speaker = splits.fold_speakers(
        data_config.dataset, speakers, data_config.fold, data_config.get("num_folds")
    )
    about["speaker_independent"] = True
    if dialogs == "all":
        return FoldSplit(by_speaker, None, about)
    ids = {name: [r.id for r in kept if r.speaker in group] for name, group in by_speaker.items()}
    return FoldSplit(by_speaker, ids, about)


def _protocol(data_config: ml_collections.ConfigDict) -> str:
    return data_config.get("protocol", "speaker")


def _dialogs(data_config: ml_collections.ConfigDict) -> str:
    return data_config.get("iemocap_dialogs", "all")


def _seed(data_config: ml_collections.ConfigDict) -> int:
    return data_config.get("split_seed", 0)


def _from_ids(rows: Sequence[Row], ids: dict[str, list[str]]) -> FoldSplit:
    """The speakers of each split of `ids`, refusing an empty split."""
    speaker_of = {row.id: row.speaker for row in rows}
    for name in splits.SPLITS:
        if not ids[name]:
            raise ValueError(f"the {name} split of this fold holds no utterance")
    speakers = {name: sorted({speaker_of[i] for i in ids[name]}) for name in splits.SPLITS}
    return FoldSplit(speakers, ids, {})


def random_split(rows: Sequence[Row], fold: int, folds: int, seed: int) -> dict[str, list[str]]:
    """The stratified utterance-level split of the module docstring (ids in stored order)."""
    if not 0 <= fold < folds:
        raise ValueError(f"config.data.fold={fold} is out of range for {folds} folds")
    rng = np.random.default_rng(seed)
    dealt = []
    for label in sorted({row.label for row in rows}):
        of_class = sorted(row.id for row in rows if row.label == label)
        dealt += [of_class[i] for i in rng.permutation(len(of_class))]
    # Dealing the classes one after another, in turn, keeps each fold within one per class.
    fold_of = {utterance: position % folds for position, utterance in enumerate(dealt)}
    validation = (fold + 1) % folds
    named = {fold: "test", validation: "validation"}
    ids = {name: [] for name in splits.SPLITS}
    for row in rows:
        ids[named.get(fold_of[row.id], "train")].append(row.id)
    return ids


def official_split(
    data_config: ml_collections.ConfigDict,
    rows: Sequence[Row],
    partitions: dict[str, Sequence[str]] | None,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The ids (in stored order) of the official partitions that form train, validation and
    test, and what results.json records of them: the partitions used and the ids of each."""
    dataset = data_config.dataset
    if not partitions:
        raise ValueError(
            f"this {dataset} build stores no official partitions: prepare it again with "
            "tools/prepare_data.py"
        )
    train, validation, test = (
        next((name for name in names if name in partitions), names[0])
        for names in OFFICIAL_PARTITIONS[dataset]
    )
    test = data_config.get("test_partition") or test
    present = sorted(partitions)
    for split, name in (("train", train), ("validation", validation), ("test", test)):
        if name not in partitions:
            field = "config.data.test_partition=" if split == "test" else f"the {split} partition "
            raise ValueError(f"{field}{name!r} is not a partition of this build: it has {present}")
    if test in (train, validation):
        role = "train" if test == train else "validation"
        raise ValueError(
            f"config.data.test_partition={test!r} is {dataset}'s {role} partition: choose "
            f"another of {present}"
        )
    names = {"train": train, "validation": validation, "test": test}
    members = {split: set(partitions[name]) for split, name in names.items()}
    ids = {split: [row.id for row in rows if row.id in members[split]] for split in names}
    about = {
        "partitions": names,
        "listed": {name: len(partitions[name]) for name in present},
        "unused_partitions": [name for name in present if name not in names.values()],
    }
    return ids, about


def is_improvised(utterance_id: str) -> bool:
    """Whether an IEMOCAP utterance id is of an improvised dialog (`Ses01F_impro01_F000`)."""
    match = _IEMOCAP_ID.fullmatch(utterance_id)
    return bool(match) and match.group(1).startswith("impro")


def text_unit(dataset: str, utterance_id: str) -> str | None:
    """The sentence or script an utterance speaks, from its id; None where it has none known.

    RAVDESS `03-01-05-01-02-01-12`: the statement (5th field). EMOVO `dis-f1-b1`: the sentence
    (3rd field). IEMOCAP `Ses01F_script01_1_F000`: the scripted dialog (`script01_1`, the same
    text in every session); improvised dialogs share a scenario, not their words, so they have
    none. CREMA-D `1001_DFA_ANG_XX` and TESS `OAF_back_angry`: the 2nd field (sentence, word).
    EmoDB `03a01Fa`: the text code (`a01`).
    """
    if dataset == "ravdess":
        fields = utterance_id.split("-")
        return fields[4] if len(fields) == 7 else None
    if dataset == "emovo":
        fields = utterance_id.split("-")
        return fields[2] if len(fields) == 3 else None
    if dataset == "iemocap":
        match = _IEMOCAP_ID.fullmatch(utterance_id)
        return match.group(1) if match and match.group(1).startswith("script") else None
    if dataset in ("crema_d", "tess"):
        fields = utterance_id.split("_")
        return fields[1] if len(fields) == (4 if dataset == "crema_d" else 3) else None
    if dataset == "emodb":
        return utterance_id[2:5] if len(utterance_id) == 7 else None
    return None


def text_overlap(dataset: str, ids: dict[str, Sequence[str]]) -> dict[str, Any] | None:
    """How many test utterances speak a sentence or script that a training utterance speaks:
    `{"unit", "test_utterances", "of"}`, or None for a corpus without known text."""
    if dataset not in TEXT_UNITS:
        return None
    trained = {text_unit(dataset, i) for i in ids["train"]} - {None}
    shared = sum(text_unit(dataset, i) in trained for i in ids["test"])
    return {"unit": TEXT_UNITS[dataset], "test_utterances": shared, "of": len(ids["test"])}
