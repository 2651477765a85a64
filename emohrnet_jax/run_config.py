"""Whether a workdir's saved run may continue under a new config, checked before any write.

A run trained under one config and resumed under another mixes hyperparameters (or crashes on
parameters of another shape and leaves a run that nothing can load), so a re-run compares the new
config with the workdir's `config.json`, and the fold's speakers with its `splits.json`. No JAX or
TensorFlow here.
"""

import json
import os
import pathlib
import runpy
from typing import Any

import ml_collections

from emohrnet_jax import storage

# Fields that may differ from the saved config.json when a run resumes (a prefix covers its fields):
SAFE_FIELDS = (
    "num_epochs",  # extends or shortens the run, only where the schedule ignores it (_is_safe)
    "keep_checkpoints",  # how many old checkpoints are kept, not what is trained
    "data.data_dir",  # where the same build lives (the fold's speakers are compared apart)
    "cross_corpus",  # evaluation on another corpus only
    "model.im2col",  # the same parameters and outputs, only speed and memory
    "bootstrap_resamples",  # the results' intervals, not what is trained
    "temperature_scaling",  # fitted after training, on the best state
)
# Fields missing from an older config.json had these values then (the code's defaults)...
_DEFAULTS = pathlib.Path(__file__).resolve().parent.parent / "configs" / "default.py"
# ...except where a field came with a default that does what no run before it did.
_BEFORE = {"evaluation": "centre_crop"}


class RunConfigError(ValueError):
    """A config or data that differs from the run already saved in the workdir."""


def as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as train writes it to config.json (tuples as lists, placeholders as null)."""
    return json.loads(config.to_json_best_effort())


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_safe(field: str, new: dict[str, Any]) -> bool:
    if field == "num_epochs":
        # A cosine decay or a warm-up spans the run: another length changes every later rate.
        return new["lr_schedule"] == "constant" and not new["warmup_epochs"]
    return any(field == safe or field.startswith(safe + ".") for safe in SAFE_FIELDS)


def differences(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`field: saved -> new` for each field of `new` that differs from `saved` and is not safe.

    Fields that `saved` lacks (a run saved before they existed) compare as the value that did
    what the run did then (their default, or `_BEFORE`'s);
    fields that only `saved` has are no longer read by the code, so they are not compared.
    """
    # Without the source tree's configs/ (an installed wheel), a missing field is not compared.
    defaults = {}
    if _DEFAULTS.is_file():
        defaults = _flat(as_json(runpy.run_path(str(_DEFAULTS))["get_config"]()))
    saved, new_flat = _flat(saved), _flat(new)
    found = []
    for field, value in new_flat.items():
        before = saved.get(field, _BEFORE.get(field, defaults.get(field, value)))
        if before != value and not _is_safe(field, new_flat):
            found.append(f"{field}: {before!r} -> {value!r}")
    return found


def _read_json(path: str) -> dict[str, Any]:
    try:
        return storage.read_json(path)
    except (OSError, ValueError) as error:
        raise RunConfigError(f"cannot read {path}: {error}; move the workdir aside") from error


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Raises RunConfigError when `workdir` holds a run saved under an incompatible config.

    An empty or new workdir (no config.json) passes.
    """
    path = os.path.join(workdir, "config.json")
    if not storage.exists(path):
        return
    found = differences(_read_json(path), as_json(config))
    if found:
        raise RunConfigError(
            f"{workdir} holds a run of another config ({'; '.join(found)}): give a new --workdir, "
            f"or the saved values (only {', '.join(SAFE_FIELDS)} may change on a resume)"
        )


def check_splits(
    workdir: str,
    speakers: dict[str, list[str]],
    build: str | None = None,
    fingerprint: str | None = None,
) -> None:
    """Raises RunConfigError when `workdir/splits.json` names other speakers than `speakers`,
    another build of the data (`build`: its source fingerprint; None for a corpus made by code),
    or other utterances in a split (`fingerprint`: the split's; an EmoBox fold file edited in
    place, say, keeps the config and can keep the speakers).
    """
    path = os.path.join(workdir, "splits.json")
    if not storage.exists(path):
        return
    saved = _read_json(path)
    found = [
        f"{split}: {saved.get(split)} -> {list(names)}"
        for split, names in speakers.items()
        if saved.get(split) != list(names)
    ]
    if found:
        raise RunConfigError(
            f"{workdir} holds a run on other speakers ({'; '.join(found)}): the data changed; "
            "give a new --workdir"
        )
    # A run saved before builds were fingerprinted has no "build": nothing to compare.
    if saved.get("build") and saved["build"] != build:
        raise RunConfigError(
            f"{workdir} holds a run on another build of {saved.get('dataset')} (prepared again "
            f"since: {saved['build']} -> {build}); its data changed: give a new --workdir"
        )
    # Nor a run saved before splits were fingerprinted.
    if saved.get("split_fingerprint") and fingerprint and saved["split_fingerprint"] != fingerprint:
        raise RunConfigError(
            f"{workdir} holds a run on other utterances of the same speakers (split fingerprint "
            f"{saved['split_fingerprint'][:12]}... -> {fingerprint[:12]}...): the split changed, "
            "an edited fold file perhaps; give a new --workdir"
        )
