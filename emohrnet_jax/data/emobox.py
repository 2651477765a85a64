"""EmoBox fold files (Ma et al., 2024) as a fold: the `emobox` protocol of `protocols`.

`config.data.fold_file` is the fold's train jsonl (`<corpus>_train_fold_<k>.jsonl`, its test file
`<corpus>_test_fold_<k>.jsonl` beside it) or "TRAIN.jsonl,TEST.jsonl". Each line's `wav` file
stem (or its `key` less the `<corpus>-` prefix) is our utterance id; lines matching no stored
utterance are counted. EmoBox has no validation split: validation speakers are carved out of its
train part (`carve_validation`).
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from emohrnet_jax import storage
from emohrnet_jax.data import splits

# How many unmatched fold-file lines results.json names (all are counted).
_EXAMPLES = 5


def files(fold_file: str) -> tuple[str, str]:
    """The train and test jsonl files that `config.data.fold_file` names (module docstring)."""
    parts = [part.strip() for part in fold_file.split(",") if part.strip()]
    if len(parts) == 2:
        return parts[0], parts[1]
    folder, name = os.path.split(parts[0]) if len(parts) == 1 else ("", "")
    if "_train_fold_" not in name:
        raise ValueError(
            f"config.data.fold_file={fold_file!r} is neither an EmoBox "
            "<corpus>_train_fold_<k>.jsonl nor a 'TRAIN.jsonl,TEST.jsonl' pair"
        )
    return parts[0], os.path.join(folder, name.replace("_train_fold_", "_test_fold_"))


def read_fold_file(path: str) -> list[dict[str, Any]]:
    """The utterances of an EmoBox jsonl file: one JSON object a line, with `key` (and `wav`)."""
    entries = []
    for number, line in enumerate(storage.read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON: {error}") from error
        if not isinstance(entry, dict) or "key" not in entry:
            raise ValueError(f'{path} line {number} has no "key" (EmoBox\'s utterance name)')
        entries.append(entry)
    return entries


def utterance_id(entry: dict[str, Any], dataset: str, stored: set[str]) -> str | None:
    """Our id of an EmoBox line: its wav file's stem, or its key less "<corpus>-"; None if
    neither is a stored utterance."""
    key = str(entry["key"])
    candidates = [
        os.path.splitext(os.path.basename(str(entry.get("wav") or "")))[0],
        key.removeprefix(f"{entry.get('dataset') or dataset}-"),
        key,
    ]
    return next((c for c in candidates if c in stored), None)


def split(
    data_config: ml_collections.ConfigDict, rows: Sequence[Any], seed: int
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The ids of an EmoBox fold's splits (validation speakers drawn by `seed` from its train
    part) of the stored `rows` (`protocols.Row`), and what results.json records of the file."""
    paths = dict(zip(("train", "test"), files(data_config.fold_file), strict=True))
    stored = {row.id for row in rows}
    matched, unmatched = {}, {}
    for name, path in paths.items():
        entries = read_fold_file(path)
        ours = [utterance_id(entry, data_config.dataset, stored) for entry in entries]
        matched[name] = {i for i in ours if i is not None}
        unmatched[name] = [str(e["key"]) for e, i in zip(entries, ours, strict=True) if i is None]
    both = sorted(matched["train"] & matched["test"])
    if both:
        raise ValueError(
            f"{len(both)} utterances are in both {paths['train']} and {paths['test']}, "
            f"e.g. {both[:_EXAMPLES]}: not a fold"
        )
    speaker_of = {row.id: row.speaker for row in rows}
    validation = carve_validation(
        data_config.dataset,
        {speaker_of[i] for i in matched["train"]},
        {speaker_of[i] for i in matched["test"]},
        seed,
    )
    ids = {name: [] for name in splits.SPLITS}
    for row in rows:
        if row.id in matched["test"]:
            ids["test"].append(row.id)
        elif row.id in matched["train"]:
            ids["validation" if row.speaker in validation else "train"].append(row.id)
    about = {
        "train_file": paths["train"],
        "test_file": paths["test"],
        "matched": {name: len(matched[name]) for name in paths},
        "unmatched": {name: len(unmatched[name]) for name in paths},
        "unmatched_examples": sorted(unmatched["train"] + unmatched["test"])[:_EXAMPLES],
        "stored_not_in_fold": len(stored - matched["train"] - matched["test"]),
        "validation_speakers": sorted(validation),
    }
    return ids, about


def carve_validation(
    dataset: str, train_speakers: set[str], test_speakers: set[str], seed: int
) -> set[str]:
    """Validation speakers drawn (by `seed`) from the train speakers that are not test speakers:
    as many as the test split has, in whole sessions for IEMOCAP, leaving at least one to train."""
    unit = (lambda speaker: speaker[:5]) if dataset == "iemocap" else (lambda speaker: speaker)
    test_units = {unit(s) for s in test_speakers}
    candidates = sorted({unit(s) for s in train_speakers} - test_units)
    count = min(max(len(test_units), 1), len(candidates) - 1)
    if count < 1:
        raise ValueError(
            f"the fold file's train part has {len(candidates)} speakers outside its test part "
            f"({candidates}): at least 2 are needed to carve validation speakers out of it"
        )
    chosen = {
        candidates[i] for i in np.random.default_rng(seed).permutation(len(candidates))[:count]
    }
    return {speaker for speaker in train_speakers if unit(speaker) in chosen}
