"""Speaker-independent cross-validation folds (the `speaker` protocol of `protocols`).

Every corpus's speakers are partitioned into ordered groups; fold k tests on group k, validates on
group k + 1 (cyclically) and trains on the rest, so no speaker is in two of train, validation and
test, and validation speakers are always drawn from the speakers not tested on:

- IEMOCAP: leave-one-session-out, 5 folds; a group is a session's two speakers (Ses01F, Ses01M).
  Fold k tests on session k + 1 and validates on the next session.
- RAVDESS: 6 folds of 4 consecutive actors (Actor_01-04, ...), two male and two female each.
- EMOVO: 6 folds of one speaker in the order f1, m1, f2, m2, f3, m3 (so validation is always the
  other gender); `num_folds=3` gives the pairs (f1, m1), (f2, m2), (f3, m3) instead.
- CREMA-D: 5 folds of 18-19 consecutive actor numbers (1001-1019, ...): 91 actors allow a
  held-out fifth of them (~1,490 clips) per test fold, as for IEMOCAP's five.
- EmoDB: leave-one-speaker-out, 10 folds (03, 08, ..., 16); SAVEE: leave-one-speaker-out, 4
  folds (DC, JE, JK, KL: 2 train, 1 validation, 1 test speaker).
- TESS: none. Its 2 speakers cannot give train, validation and test speakers: use
  `config.data.protocol='random'` (speaker-dependent).
- ESD: 5 folds of 4 speakers, two Mandarin and two English each ((0001, 0002, 0011, 0012), ...),
  so every split holds both languages; its official partitions are the `official` protocol.
- MSP-Podcast: none; its folds are its official partitions (`protocols`, `official`).
- Any other corpus (synthetic, labelled_folder): the sorted speakers in `num_folds` (default 5)
  near-equal groups.
"""

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from emohrnet_jax import storage

DEFAULT_NUM_FOLDS = {
    **{"iemocap": 5, "ravdess": 6, "emovo": 6, "esd": 5},
    **{"crema_d": 5, "emodb": 10, "savee": 4},
}
# Corpora whose speakers are too few for a speaker-independent train/validation/test split.
TOO_FEW_SPEAKERS = {"tess": "TESS has 2 speakers (OAF, YAF)"}
GENERIC_NUM_FOLDS = 5
SPLITS = ("train", "validation", "test")


def num_folds(dataset: str, requested: int | None = None) -> int:
    """The number of folds of a dataset's protocol (`requested` overrides where allowed)."""
    if dataset in TOO_FEW_SPEAKERS:
        raise ValueError(
            f"{TOO_FEW_SPEAKERS[dataset]}, too few for the speaker protocol's train, validation "
            "and test speakers: set --config.data.protocol=random (speaker-dependent)"
        )
    if requested is None:
        return DEFAULT_NUM_FOLDS.get(dataset, GENERIC_NUM_FOLDS)
    if dataset == "iemocap" and requested != 5:
        raise ValueError(f"IEMOCAP's protocol is leave-one-session-out (5 folds), got {requested}")
    if requested < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), got {requested}")
    return requested


def speaker_groups(
    dataset: str, speakers: Sequence[str], folds: int | None = None
) -> list[list[str]]:
    """Partitions a corpus's speakers into the ordered groups of its fold protocol."""
    folds = num_folds(dataset, folds)
    speakers = sorted(set(speakers))
    if dataset == "iemocap":
        sessions = sorted({speaker[:5] for speaker in speakers})
        groups = [[s for s in speakers if s.startswith(session)] for session in sessions]
    elif dataset == "emovo":
        alternating = sorted(speakers, key=lambda s: (s[1:], s[0]))  # f1, m1, f2, m2, ...
        groups = [list(g) for g in np.array_split(np.array(alternating, dtype=object), folds)]
    elif dataset == "esd":
        # Mandarin 0001-0010 and English 0011-0020: each group takes a share of both.
        languages = ([s for s in speakers if int(s) <= 10], [s for s in speakers if int(s) > 10])
        shares = [np.array_split(np.array(group, dtype=object), folds) for group in languages]
        groups = [[*mandarin, *english] for mandarin, english in zip(*shares, strict=True)]
    else:
        groups = [list(g) for g in np.array_split(np.array(speakers, dtype=object), folds)]
    if len(groups) != folds or any(not group for group in groups):
        raise ValueError(
            f"cannot make {folds} speaker-independent folds of {dataset} from "
            f"{len(speakers)} speakers: {speakers}"
        )
    return groups


def fold_speakers(
    dataset: str, speakers: Sequence[str], fold: int, folds: int | None = None
) -> dict[str, list[str]]:
    """The speakers of `train`, `validation` and `test` for fold `fold` (0-based)."""
    groups = speaker_groups(dataset, speakers, folds)
    if not 0 <= fold < len(groups):
        raise ValueError(f"config.data.fold={fold} is out of range for {len(groups)} folds")
    validation = (fold + 1) % len(groups)
    train = [s for i, group in enumerate(groups) if i not in (fold, validation) for s in group]
    return {"train": sorted(train), "validation": groups[validation], "test": groups[fold]}


def split_fingerprint(utterance_ids: dict[str, Sequence[str]]) -> str:
    """The SHA-256 (hex) of the sorted utterance ids of `train`, `validation` and `test`, in turn:
    equal for two runs on the same utterances of each split, whatever their speakers' names."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(json.dumps([split, sorted(utterance_ids[split])]).encode())
    return digest.hexdigest()


def save_splits(
    path: str,
    dataset: str,
    fold: int,
    splits: dict[str, list[str]],
    build: str | None = None,
    fingerprint: str | None = None,
    protocol: dict[str, Any] | None = None,
) -> None:
    """Writes the fold's speakers, the build's source fingerprint, the split's fingerprint
    (`split_fingerprint`) and what `protocol` says of the fold's protocol as JSON, atomically."""
    storage.write_json_atomically(
        path,
        {"dataset": dataset, "fold": fold, "build": build, "split_fingerprint": fingerprint}
        | (protocol or {})
        | splits,
    )
