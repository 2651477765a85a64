"""What a build was made from, and rebuilding it when that changes, so no stale build is used.

A fingerprint covers each utterance's path, label, speaker, id, file size and modification time,
the excluded files by reason, the label files or CSV read (size, time and a hash of their bytes)
and the class names. It takes a `stat` per audio file and a read of the label files or CSV (no
audio is decoded), so a training run can check a labelled-folder build in a moment. The digest
is stored in the dataset's metadata and the record itself in `sources.json` beside the TFRecords,
to say what changed.

`build_if_changed` (used by `builders.prepare`) builds under the lock of the build folder
(data_dir/dataset/config), in a temporary folder that replaces the old build only when complete.
"""

import collections
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from emohrnet_jax import locks, storage
from emohrnet_jax.data import corpora

SOURCES_FILE = "sources.json"
METADATA_KEY = "source_fingerprint"
# tfds's own temporary folders are named `incomplete.XXXXXX_<version>`; ours shares the prefix.
TEMPORARY_PREFIX = "incomplete."
STAGING = TEMPORARY_PREFIX + "staging"


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
    storage.write_json_atomically(os.path.join(folder, SOURCES_FILE), fingerprint["entries"])


def load(folder: str) -> dict[str, Any] | None:
    """The record saved in a build folder; None for a build made before fingerprints."""
    try:
        with open(os.path.join(folder, SOURCES_FILE)) as file:
            return json.load(file)
    except FileNotFoundError:
        return None


def what_changed(metadata: dict[str, Any], folder: str, fingerprint: dict[str, Any]) -> str | None:
    """What changed since the build in `folder` (with `metadata`) was made; None if nothing."""
    if metadata.get(METADATA_KEY) == fingerprint["digest"]:
        return None
    return describe_change(load(folder), fingerprint["entries"])


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


def build_if_changed(
    builder: tfds.core.DatasetBuilder,
    manual_dir: str | None,
    num_workers: int | None,
    builder_args: dict[str, Any],
) -> str | None:
    """Builds `builder`'s dataset unless its build is up to date with its sources.

    Returns:
      None when the build was kept, "" for a first build, else why it was rebuilt.
    """
    folder = os.path.dirname(builder.data_dir)  # data_dir/dataset/config: versions, temporaries
    at_hand = _raw_files_at_hand(builder, manual_dir)  # Before the lock creates any folder.
    with locks.hold(folder, f"the build of {builder.name}"):
        for temporary in glob.glob(os.path.join(folder, TEMPORARY_PREFIX + "*")):
            shutil.rmtree(temporary)  # Left by a killed build; the lock says none is running.
        listing = builder.listing(manual_dir) if at_hand else None
        fingerprint = None
        if listing is not None and builder.READS_FILES:
            fingerprint = record(listing, builder.class_names())
        reason = _rebuild_reason(builder, fingerprint)
        if reason is not None:
            _build(builder, listing, fingerprint, manual_dir, num_workers, builder_args)
    return reason


def _raw_files_at_hand(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> bool:
    """Whether the corpus's raw files can be listed; raises when they are needed and missing."""
    needs_manual_dir = builder.READS_FILES and builder.name != "labelled_folder"
    if not needs_manual_dir or (manual_dir and os.path.isdir(manual_dir)):
        return True
    if builder.is_prepared():
        return False  # Kept as it is: a build reads back without its raw files.
    raise FileNotFoundError(
        f"manual_dir {manual_dir!r} is not a folder; {builder.name} is built from its raw "
        f"files:{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )


def _rebuild_reason(
    builder: tfds.core.DatasetBuilder, fingerprint: dict[str, Any] | None
) -> str | None:
    """Why `builder` must be built ("" for a first build), or None to keep its build."""
    if not builder.is_prepared():
        return ""
    if fingerprint is None:  # The corpus is code, or its raw files are not at hand.
        return None
    change = what_changed(builder.info.metadata, builder.data_dir, fingerprint)
    if change is None:
        return None
    reason = f"the sources changed since it was prepared ({change})"
    logging.warning("%s (%s): %s: rebuilding", builder.name, builder.builder_config.name, reason)
    return reason


def _build(
    builder: tfds.core.DatasetBuilder,
    listing: corpora.Listing,
    fingerprint: dict[str, Any] | None,
    manual_dir: str | None,
    num_workers: int | None,
    builder_args: dict[str, Any],
) -> None:
    """Builds in a staging folder, then moves the complete build in place of `builder`'s."""
    staging = os.path.join(os.path.dirname(builder.data_dir), STAGING)
    try:
        staged = tfds.builder(
            builder.name,
            data_dir=staging,
            config=builder.builder_config,
            num_workers=num_workers,
            listing=listing,
            fingerprint=fingerprint,
            **builder_args,
        )
        staged.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
        # A kill between the two renames leaves no build (the next prepare makes it), never a mix.
        if os.path.exists(builder.data_dir):
            os.rename(builder.data_dir, os.path.join(staging, "replaced"))
        os.rename(staged.data_dir, builder.data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
