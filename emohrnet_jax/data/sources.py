"""Source fingerprints: what a build was made from, so that a changed corpus is never reused.

A fingerprint covers each utterance's path, label, speaker, id, file size and modification time,
the excluded files by reason, the label files or CSV read (size, time and a hash of their bytes)
and the class names. It is computed from `stat` alone (no audio is decoded), so a training run
can check a labelled-folder build in a moment. The digest is stored in the dataset's metadata
and the record itself in `sources.json` beside the TFRecords, to say what changed.
"""

import collections
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from emohrnet_jax import files
from emohrnet_jax.data import corpora

SOURCES_FILE = "sources.json"
METADATA_KEY = "source_fingerprint"


def _file_hash(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.sha1(file.read()).hexdigest()


def record(listing: corpora.Listing, class_names: Sequence[str]) -> dict[str, Any]:
    """The fingerprint of a listing: its `digest` and the `entries` it digests."""
    utterances = {}
    for u in listing.utterances:
        status = os.stat(u.path)
        utterances[u.path] = [u.label, u.speaker, u.id, status.st_size, status.st_mtime_ns]
    inputs = {}
    for path in listing.inputs:
        status = os.stat(path)
        inputs[path] = [status.st_size, status.st_mtime_ns, _file_hash(path)]
    entries = {
        "utterances": utterances,
        "excluded": {reason: list(items) for reason, items in sorted(listing.excluded.items())},
        "inputs": inputs,
        "class_names": list(class_names),
    }
    digest = hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]
    return {"digest": digest, "entries": entries}


def save(folder: str, fingerprint: dict[str, Any]) -> None:
    """Writes the fingerprint's record into a build folder."""
    files.write_json_atomically(os.path.join(folder, SOURCES_FILE), fingerprint["entries"])


def load(folder: str) -> dict[str, Any] | None:
    """The record saved in a build folder; None for a build made before fingerprints."""
    try:
        with open(os.path.join(folder, SOURCES_FILE)) as file:
            return json.load(file)
    except FileNotFoundError:
        return None


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What differs between a build's saved record and the current one, in a few words."""
    if old is None:
        return "built before source fingerprints were recorded"
    before, after = old["utterances"], new["utterances"]
    counts = collections.Counter(
        added=len(after.keys() - before.keys()), removed=len(before.keys() - after.keys())
    )
    for path in before.keys() & after.keys():
        if before[path][:3] != after[path][:3]:  # label, speaker or id
            counts["relabelled"] += 1
        elif before[path][3:] != after[path][3:]:
            counts["changed (size or time)"] += 1
    parts = [f"{n} {'file' if n == 1 else 'files'} {what}" for what, n in counts.items() if n]
    excluded = [sum(map(len, entries["excluded"].values())) for entries in (old, new)]
    if old["excluded"] != new["excluded"]:
        parts.append(f"excluded files {excluded[0]} -> {excluded[1]}")
    edited = sorted(
        os.path.basename(path)
        for path in old["inputs"].keys() | new["inputs"].keys()
        if old["inputs"].get(path) != new["inputs"].get(path)
    )
    if edited:
        parts.append(f"{', '.join(edited[:3])}{' ...' if len(edited) > 3 else ''} edited")
    if old["class_names"] != new["class_names"]:
        parts.append(f"class names {old['class_names']} -> {new['class_names']}")
    return ", ".join(parts) or "the file list changed"
