"""Another corpus scored by a run (cross-corpus evaluation): its labels mapped onto the run's.

A `theirs=ours` label map pairs the corpus's classes with the run's (by default the classes that
share a name); the corpus's other classes are left out of the scores and counted.
"""

import dataclasses
from collections.abc import Sequence

import ml_collections

from emohrnet_jax.data import loading, pipeline, splits


def parse_label_map(
    text: str,
    corpus_classes: Sequence[str],
    model_classes: Sequence[str],
    field: str = "config.cross_corpus.label_map",
) -> dict[str, str]:
    """Reads "theirs=ours,..." pairs (the config's `field`); an empty text pairs the classes that
    share a name.

    Raises:
      ValueError: on a malformed pair, a name that is not a class, or a mapping that is empty.
    """
    if not text.strip():
        mapping = {name: name for name in corpus_classes if name in model_classes}
    else:
        mapping = {}
        for pair in text.split(","):
            theirs, sep, ours = (part.strip() for part in pair.partition("="))
            if not sep or not theirs or not ours:
                raise ValueError(f"{field}: entry {pair!r} is not of the form theirs=ours")
            if theirs not in corpus_classes:
                raise ValueError(f"{field}: {theirs!r} is not one of {list(corpus_classes)}")
            if ours not in model_classes:
                raise ValueError(f"{field}: {ours!r} is not one of {list(model_classes)}")
            mapping[theirs] = ours
    if not mapping:
        raise ValueError(
            f"no class of {list(corpus_classes)} maps onto the model's {list(model_classes)}; "
            f"set {field}, e.g. 'joy=happy,anger=angry'"
        )
    return mapping


def create_input(
    config: ml_collections.ConfigDict, split: str
) -> tuple[pipeline.FoldInput, dict[str, str], dict[str, int]]:
    """Corpus `config.cross_corpus.dataset`, prepared with the run's features, labels mapped.

    `split` is `all` (every speaker) or that corpus's `train`, `validation` or `test` speakers of
    fold `config.data.fold` (its own protocol). Returns the input (model class names, mapped
    labels), the mapping and the number of examples of each class left out.
    """
    cross = config.cross_corpus
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    data_config.dataset = cross.dataset
    data_config.label_set = cross.label_set
    data_config.csv = cross.get("csv")
    builder = loading.load_builder(data_config, prepare_synthetic=False, check_classes=False)
    corpus_classes = list(builder.info.metadata["class_names"])
    model_classes = list(config.data.class_names)
    mapping = parse_label_map(cross.label_map, corpus_classes, model_classes)
    speakers = list(builder.info.metadata["speakers"])
    if split == "all":
        fold_speakers = {"all": speakers}
    else:
        fold_speakers = splits.fold_speakers(cross.dataset, speakers, config.data.fold)
    unmapped = pipeline.FoldInput(
        builder=builder,
        speakers=fold_speakers,
        class_names=tuple(corpus_classes),
        num_frames=config.data.num_frames,
    )
    fold = mapped(unmapped, mapping, model_classes)
    return fold, mapping, left_out_counts(unmapped, mapping, [split])


def mapped(
    unmapped: pipeline.FoldInput, mapping: dict[str, str], model_classes: Sequence[str]
) -> pipeline.FoldInput:
    """`unmapped` (labels of the corpus's classes) with labels of `model_classes` by `mapping`;
    a class outside it is left out."""
    model_classes = list(model_classes)
    return dataclasses.replace(
        unmapped,
        class_names=tuple(model_classes),
        label_map=tuple(
            model_classes.index(mapping[name]) if name in mapping else -1
            for name in unmapped.class_names
        ),
    )


def left_out_counts(
    unmapped: pipeline.FoldInput, mapping: dict[str, str], split_names: Sequence[str]
) -> dict[str, int]:
    """How many utterances of each class outside `mapping` the named splits of `unmapped` hold
    (the splits it has)."""
    classes = unmapped.class_names
    dropped = {i for i, name in enumerate(classes) if name not in mapping}
    counts = {classes[i]: 0 for i in sorted(dropped)}
    if not dropped:  # nothing to count: the splits are not read
        return counts
    for split in filter(unmapped.has, split_names):
        for utterance in unmapped.utterances(split):
            if utterance["label"] in dropped:
                counts[classes[utterance["label"]]] += 1
    return counts
