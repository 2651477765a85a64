"""A build's summary (`prepare_summary.json`): what was kept, skipped and converted, and why.

Each utterance's extraction gives an `outcome`; outcomes merge in any order and grouping
(`merge`), so the summary is the same whether the utterances were extracted in this process, in
worker processes or on Apache Beam (a combine).
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from emohrnet_jax.data import corpora


def outcome(utterance: corpora.Utterance, result: dict[str, Any]) -> dict[str, Any]:
    """What one utterance's extraction `result` (`features.extract`) adds to the summary."""
    if "error" in result:
        return {"skipped": {result["error"]: [utterance.path]}, "conversions": {}, "speakers": []}
    conversions = dict(Counter(result["conversions"]))
    return {"skipped": {}, "conversions": conversions, "speakers": [utterance.speaker]}


def merge(outcomes: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Outcomes (or merged ones) merged into one."""
    skipped, conversions, speakers = defaultdict(list), Counter(), set()
    for part in outcomes:
        for reason, paths in part["skipped"].items():
            skipped[reason].extend(paths)
        conversions.update(part["conversions"])
        speakers.update(part["speakers"])
    return dict(skipped=dict(skipped), conversions=dict(conversions), speakers=sorted(speakers))


def summarize(
    dataset: str, config: str, listing: corpora.Listing, merged: dict[str, Any]
) -> dict[str, Any]:
    """The summary of a build of `listing`, from the merged outcomes of its utterances.

    Raises:
      ValueError: no utterance was kept (tfds's own error for an empty split names no reason).
    """
    skipped = merged["skipped"]
    kept = len(listing.utterances) - sum(len(paths) for paths in skipped.values())
    summary = {
        "dataset": dataset,
        "config": config,
        "kept": kept,
        "skipped": {reason: len(paths) for reason, paths in sorted(skipped.items())},
        "excluded": {r: len(p) for r, p in sorted(listing.excluded.items())},
        "conversions": dict(sorted(merged["conversions"].items())),
        "speakers": sorted(merged["speakers"]),
        "skipped_files": {reason: sorted(paths) for reason, paths in sorted(skipped.items())},
        "excluded_files": {r: sorted(p) for r, p in sorted(listing.excluded.items())},
        **({"noted": dict(sorted(listing.noted.items()))} if listing.noted else {}),
    }
    if not kept:
        raise nothing_kept(dataset, merged)
    return summary


def nothing_kept(dataset: str, merged: dict[str, Any]) -> ValueError:
    """The error of a build that kept no utterance, with the reasons counted."""
    counts = {reason: len(paths) for reason, paths in sorted(merged["skipped"].items())}
    return ValueError(f"no usable audio in {dataset}: {counts}")
