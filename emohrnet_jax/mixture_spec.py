"""Several prepared corpora in one run (`config.data.dataset="mixture"`): what
`config.data.datasets` may say, and the folds and epoch shares that follow from it.

Each entry of `config.data.datasets` is a ConfigDict with
- `dataset`: a prepared corpus's tfds name;
- `name`: the corpus's name in the run: ids and speakers become "name/id", "name/speaker", and
  results and pictures are named by it (default: `dataset`; names are unique, so two labelled
  folders need one each);
- `label_map`: "theirs=ours,..." onto `config.data.class_names` (empty: the classes that share a
  name); the corpus's other classes are left out of every split, and counted;
- `weight`: the corpus's share of a training epoch with `config.data.mixture="given"`;
- `csv`, `label_set`, `skip_unknown_labels`, `protocol`, `fold_file`, `num_folds`,
  `test_partition`: as `config.data`'s fields of that corpus alone.

`config.data.mixture`: "size" (every training utterance once an epoch, pooled and shuffled),
"equal" (each corpus an equal share of the epoch's draws) or "given" (shares in proportion to the
weights). An epoch is as many draws as all corpora have training utterances. With
`sampling="balanced"`, each corpus's share is split equally over its classes.

`config.data.protocol`:
- "speaker" (default): fold k is fold k of every corpus under its own protocol (the entry's
  `protocol`, by default its speaker-independent folds), merged; there are as many folds as the
  corpus with fewest has.
- "leave_one_corpus_out": fold k tests on every utterance of corpus k; the other corpora train,
  and validate on the validation speakers of their own fold 0 (whose test speakers train too).
No TensorFlow here: the config checks read it before the slow imports.
"""

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np

MIXTURE = "mixture"
MIXTURES = ("size", "equal", "given")
LEAVE_ONE_CORPUS_OUT = "leave_one_corpus_out"
# An entry's fields beside `dataset`, `name`, `label_map` and `weight`: config.data's of one corpus.
CORPUS_FIELDS = (
    "csv",
    "label_set",
    "skip_unknown_labels",
    "protocol",
    "fold_file",
    "num_folds",
    "test_partition",
)
ENTRY_FIELDS = ("dataset", "name", "label_map", "weight", *CORPUS_FIELDS)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One corpus of a mixture: its name, label map, weight and its own `config.data`."""

    name: str
    label_map: str
    weight: float
    data_config: ml_collections.ConfigDict


def is_mixture(data_config: ml_collections.ConfigDict) -> bool:
    """Whether `config.data` trains on several corpora."""
    return data_config.get("dataset") == MIXTURE


def check(data_config: ml_collections.ConfigDict) -> None:
    """Raises ValueError (one line, naming the field) for mixture fields that cannot apply."""
    listed = data_config.get("datasets") or ()
    mixture = data_config.get("mixture", "size")
    protocol = data_config.get("protocol", "speaker")
    if mixture not in MIXTURES:
        raise ValueError(f"config.data.mixture={mixture!r} is not one of {MIXTURES}")
    if not is_mixture(data_config):
        if listed:
            raise ValueError(
                f"config.data.datasets is set but config.data.dataset={data_config.dataset!r}: "
                f"set --config.data.dataset={MIXTURE} to train on the listed corpora"
            )
        if mixture != "size":
            raise ValueError(
                f"config.data.mixture={mixture!r} applies to config.data.dataset={MIXTURE!r} only"
            )
        if protocol == LEAVE_ONE_CORPUS_OUT:
            raise ValueError(
                f"config.data.protocol={LEAVE_ONE_CORPUS_OUT!r} needs several corpora: "
                f"config.data.dataset={MIXTURE!r} with config.data.datasets"
            )
        return
    entries(data_config)


def entries(data_config: ml_collections.ConfigDict) -> list[Entry]:
    """The mixture's corpora, each with the `config.data` of that corpus alone.

    Raises:
      ValueError: no corpora, an unknown or misplaced field, a repeated name, a bad weight.
    """
    listed = list(data_config.get("datasets") or ())
    minimum = 2 if data_config.get("protocol") == LEAVE_ONE_CORPUS_OUT else 1
    if len(listed) < minimum:
        raise ValueError(
            f"config.data.dataset={MIXTURE!r} needs config.data.datasets to list at least "
            f"{minimum} prepared corpora (e.g. configs/multi_corpus.py), got {len(listed)}"
        )
    if data_config.get("protocol") not in ("speaker", LEAVE_ONE_CORPUS_OUT):
        raise ValueError(
            f"config.data.protocol={data_config.get('protocol')!r} does not apply to a mixture: "
            f"use 'speaker' or {LEAVE_ONE_CORPUS_OUT!r} (a corpus's own protocol goes in its "
            "entry of config.data.datasets)"
        )
    if data_config.get("csv"):
        raise ValueError(
            "config.data.csv is set but config.data.dataset='mixture': give a labelled folder's "
            "csv in its entry of config.data.datasets"
        )
    result = [_entry(data_config, index, item) for index, item in enumerate(listed)]
    names = [entry.name for entry in result]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"config.data.datasets names {repeated} more than once: give each entry its own `name`"
        )
    weighted = [entry.name for entry in result if entry.weight != 1.0]
    if weighted and data_config.get("mixture", "size") != "given":
        raise ValueError(
            f"config.data.datasets gives weights ({weighted}) but config.data.mixture="
            f"{data_config.get('mixture', 'size')!r} would ignore them: set mixture='given'"
        )
    return result


def _entry(data_config: ml_collections.ConfigDict, index: int, item) -> Entry:
    """Entry `index` of `config.data.datasets`, checked."""
    where = f"config.data.datasets[{index}]"
    fields = dict(item.items()) if hasattr(item, "items") else None
    if fields is None or not fields.get("dataset"):
        raise ValueError(f"{where} must be a ConfigDict with at least a `dataset` field")
    unknown = sorted(set(fields) - set(ENTRY_FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown fields {unknown}; allowed: {list(ENTRY_FIELDS)}")
    if fields["dataset"] == MIXTURE:
        raise ValueError(f"{where}.dataset cannot itself be {MIXTURE!r}")
    name = str(fields.get("name") or fields["dataset"])
    if "/" in name or not name.strip():
        raise ValueError(f"{where}.name={name!r} must be a non-empty name without '/'")
    weight = float(fields.get("weight", 1.0))
    if not weight > 0:
        raise ValueError(f"{where}.weight={weight} must be > 0")
    corpus = ml_collections.ConfigDict(data_config.to_dict())
    corpus.dataset = fields["dataset"]
    corpus.datasets = ()
    corpus.mixture = "size"
    corpus.protocol = "speaker"
    for field in CORPUS_FIELDS:
        if field in fields:
            corpus[field] = fields[field]
    if data_config.get("protocol") == LEAVE_ONE_CORPUS_OUT:
        corpus.fold = 0  # a training corpus's validation speakers: those of its fold 0
    return Entry(name, str(fields.get("label_map") or ""), weight, corpus)


def num_folds(data_config: ml_collections.ConfigDict) -> int:
    """The mixture's number of folds: its corpora's, or under leave-one-corpus-out its corpora."""
    from emohrnet_jax.data import protocols  # the data package imports TensorFlow

    listed = entries(data_config)
    if data_config.get("protocol") == LEAVE_ONE_CORPUS_OUT:
        return len(listed)
    return min(protocols.num_folds(entry.data_config) for entry in listed)


def corpus_shares(mixture: str, sizes: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """Each corpus's share of an epoch's draws (summing to 1): by training `sizes`, equal, or
    by `weights` ("given")."""
    if mixture == "size":
        raw = np.asarray(sizes, np.float64)
    elif mixture == "equal":
        raw = np.ones(len(sizes))
    elif mixture == "given":
        raw = np.asarray(weights, np.float64)
    else:
        raise ValueError(f"config.data.mixture={mixture!r} is not one of {MIXTURES}")
    # A corpus without training utterances (left out) draws nothing.
    raw = np.where(np.asarray(sizes) > 0, raw, 0.0)
    return raw / raw.sum()
