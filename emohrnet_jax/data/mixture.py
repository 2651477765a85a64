"""Several prepared corpora as one fold's input: labels mapped onto one class set, each corpus's
fold merged, and the training epoch drawn from them in the shares of `config.data.mixture`.

What the config may say is in `mixture_spec`. Utterance ids and speakers carry their corpus's name
("crema_d/1001_DFA_ANG_XX", "crema_d/1001"), so they stay unique across corpora and results can be
split by corpus (`corpus_of`). The stored order of a split is corpus after corpus, in the order
of `config.data.datasets`; the training order is, like a single corpus's, a pure function of
(seed, epoch), so a resumed run draws the same batches.
"""

import dataclasses
import functools
import json
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from emohrnet_jax import mixture_spec
from emohrnet_jax.data import balance, cross_corpus, loading, pipeline, splits


@dataclasses.dataclass(frozen=True)
class Member:
    """One corpus of a mixture: its fold (labels already mapped onto the run's classes), its
    mixture weight and what results.json records of it."""

    name: str
    fold: pipeline.FoldInput
    weight: float
    about: dict[str, Any]


@dataclasses.dataclass(kw_only=True)
class MixtureInput(pipeline.Input):
    """A fold of several corpora: each split is its members' splits, one after another."""

    members: tuple[Member, ...]
    mixture: str = "size"

    @property
    def n_mels(self) -> int:
        return self.members[0].fold.n_mels

    @property
    def build(self) -> str:
        return json.dumps({m.name: m.fold.build for m in self.members}, sort_keys=True)

    @property
    def corpora(self) -> tuple[str, ...]:
        """The corpora's names, in order."""
        return tuple(m.name for m in self.members)

    def stored(self, name: str, decoders: Any = None) -> tf.data.Dataset:
        parts = [
            m.fold.stored(name, decoders).map(functools.partial(_prefixed, m.name + "/"))
            for m in self.members
            if m.fold.has(name)
        ]
        if not parts:
            raise ValueError(f"no corpus of the mixture has a {name} split in this fold")
        return functools.reduce(lambda a, b: a.concatenate(b), parts)

    def count(self, name: str) -> int:
        return sum(m.fold.count(name) for m in self.members if m.fold.has(name))

    def training_order(self, num_draws: int, seed: int, epoch: int, sampling: str):
        """The pooled shuffle (None) when every utterance is drawn once, else draws in each
        corpus's share (`mixture_spec.corpus_shares`), split equally over its classes when
        `sampling="balanced"`."""
        if self.mixture == "size" and sampling != "balanced":
            return None
        sizes = [m.fold.count("train") if m.fold.has("train") else 0 for m in self.members]
        weights = [m.weight for m in self.members]
        shares = mixture_spec.corpus_shares(self.mixture, sizes, weights)
        corpus = np.repeat(np.arange(len(sizes)), sizes)
        if sampling != "balanced":
            return balance.weighted_order(corpus, dict(enumerate(shares)), num_draws, seed, epoch)
        labels = np.array([u["label"] for u in self.utterances("train")], np.int64)
        classes = len(self.class_names)
        groups = corpus * classes + labels
        present = np.unique(groups)
        per_corpus = np.bincount(present // classes, minlength=len(sizes))
        group_shares = {int(g): shares[g // classes] / per_corpus[g // classes] for g in present}
        return balance.weighted_order(groups, group_shares, num_draws, seed, epoch)


def corpus_of(utterance_id: str) -> str:
    """The corpus name of a mixture's utterance id ("name/id")."""
    return utterance_id.split("/", 1)[0]


def _prefixed(prefix: str, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {
        **example,
        "id": tf.strings.join([prefix, example["id"]]),
        "speaker": tf.strings.join([prefix, example["speaker"]]),
    }


def create_input(config: ml_collections.ConfigDict) -> MixtureInput:
    """The mixture of `config.data.datasets`, fold `config.data.fold` of `config.data.protocol`.

    Raises:
      ValueError: a mixture field that cannot apply, a fold out of range, a split that no
        corpus fills, a label map that does not fit.
    """
    data = config.data
    entries = mixture_spec.entries(data)
    folds = mixture_spec.num_folds(data)
    if not 0 <= data.fold < folds:
        raise ValueError(f"config.data.fold={data.fold} is out of range for {folds} folds")
    members = tuple(_member(config, index, entry) for index, entry in enumerate(entries))
    for split in splits.SPLITS:
        if not any(m.fold.has(split) for m in members):
            raise ValueError(f"no corpus of the mixture has {split} utterances in fold {data.fold}")
    speakers = {
        split: [f"{m.name}/{s}" for m in members for s in m.fold.speakers[split]]
        for split in splits.SPLITS
    }
    protocol = {
        "protocol": data.protocol,
        "speaker_independent": all(m.about["speaker_independent"] for m in members),
        "mixture": data.mixture,
        "corpora": [m.about for m in members],
    }
    return MixtureInput(
        speakers=speakers,
        class_names=tuple(data.class_names),
        num_frames=data.num_frames,
        protocol=protocol,
        members=members,
        mixture=data.mixture,
    )


def _member(config: ml_collections.ConfigDict, index: int, entry: mixture_spec.Entry) -> Member:
    """Corpus `index` of the mixture: its build, label map and fold, and what results record."""
    builder = loading.load_builder(entry.data_config, check_classes=False)
    corpus_classes = list(builder.info.metadata["class_names"])
    model_classes = list(config.data.class_names)
    field = f"config.data.datasets[{index}].label_map"
    mapping = cross_corpus.parse_label_map(entry.label_map, corpus_classes, model_classes, field)
    fold = pipeline.select_fold(builder, entry.data_config)
    speakers, ids = fold.speakers, fold.ids
    if config.data.protocol == mixture_spec.LEAVE_ONE_CORPUS_OUT:
        speakers, ids = _left_out(fold, tested=index == config.data.fold)
    unmapped = pipeline.FoldInput(
        builder=builder,
        speakers=speakers,
        class_names=tuple(corpus_classes),
        num_frames=config.data.num_frames,
        ids=ids,
    )
    member = cross_corpus.mapped(unmapped, mapping, model_classes)
    about = {
        "name": entry.name,
        "dataset": entry.data_config.dataset,
        "label_map": mapping,
        **fold.about,
        "left_out": cross_corpus.left_out_counts(unmapped, mapping, splits.SPLITS),
    }
    return Member(entry.name, member, entry.weight, about)


def _left_out(fold: Any, tested: bool) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """A corpus's splits (speakers, ids) under leave-one-corpus-out, from its fold 0
    (`protocols.FoldSplit`): all of it tests when it is the one left out, else its validation
    speakers validate and the rest trains."""

    def regrouped(split_of: dict[str, list[str]]) -> dict[str, list[str]]:
        if tested:
            everything = [i for split in splits.SPLITS for i in split_of[split]]
            return {"train": [], "validation": [], "test": sorted(everything)}
        train = sorted(split_of["train"] + split_of["test"])
        return {"train": train, "validation": split_of["validation"], "test": []}

    return regrouped(fold.speakers), None if fold.ids is None else regrouped(fold.ids)
