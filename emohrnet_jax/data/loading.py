"""Finding a prepared corpus for `config.data`: its builder options, the build, and the checks
that it is the build the config means (features, classes, unchanged sources).
"""

import os
from typing import Any

import ml_collections
import tensorflow_datasets as tfds

from emohrnet_jax import paths
from emohrnet_jax.audio import features, synthetic
from emohrnet_jax.data import builders, csv_corpus, remote, sources


def builder_options(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The builder options that `config.data` implies for its dataset."""
    options = _corpus_options(data_config)
    # Part of the build's name: a build prepared with --skip_unknown_labels is found only so.
    if data_config.get("skip_unknown_labels") and data_config.dataset != "synthetic":
        options["skip_unknown_labels"] = True
    return options


def _corpus_options(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
    dataset = data_config.dataset
    if dataset == "labelled_folder":
        csv_path = paths.local(data_config.get("csv"), "config.data.csv")
        if not csv_path:
            raise ValueError(
                "config.data.csv is not set: labelled_folder needs the CSV it was prepared from "
                "(--config.data.csv=PATH, as given to tools/prepare_data.py --csv)"
            )
        return {"csv_path": os.path.realpath(csv_path)}
    if dataset == "iemocap":
        return {"label_set": data_config.get("label_set", "4class")}
    if dataset == "synthetic":
        return {
            "corpus": synthetic.CorpusSpec(
                num_speakers=data_config.synthetic_speakers,
                utterances_per_speaker=data_config.synthetic_utterances_per_speaker,
                seed=data_config.synthetic_seed,
            )
        }
    return {}


def load_builder(
    data_config: ml_collections.ConfigDict,
    prepare_synthetic: bool = True,
    check_classes: bool = True,
) -> tfds.core.DatasetBuilder:
    """The prepared dataset of `config.data`, checked against the config's features and classes.

    The synthetic corpus is prepared on first use; a corpus that needs raw files is an error that
    says how to prepare it, and a labelled folder whose CSV or audio changed since it was prepared
    is refused. `check_classes=False` accepts any stored classes (cross-corpus).
    """
    params = features.FeatureParams.from_config(data_config)
    dataset = data_config.dataset
    if dataset not in builders.BUILDERS:
        raise ValueError(
            f"unknown config.data.dataset={dataset!r}; choose one of {sorted(builders.BUILDERS)}"
        )
    data_dir = paths.location(data_config.data_dir, "config.data.data_dir")
    options = builder_options(data_config)
    config = builders.make_config(dataset, params, **options)
    local = remote.local_data_dir(data_dir, dataset, config)
    builder = tfds.builder(dataset, data_dir=local, config=config)
    if not builder.is_prepared():
        if not (dataset == "synthetic" and prepare_synthetic):
            where = data_dir if local != data_dir else builder.data_dir
            raise FileNotFoundError(
                f"{dataset} with these features is not prepared in {where}; run "
                f"`{_prepare_command(data_config)}` with the same feature parameters ({params})"
            )
        remote.prepare(dataset, data_dir, feature_params=params, **options)
        builder = tfds.builder(dataset, data_dir=local, config=config)
    if dataset == "labelled_folder":
        _check_sources(builder, data_config)
    stored = builder.info.metadata
    if stored.get("feature_params") != params.as_dict():
        raise ValueError(
            f"prepared features {stored.get('feature_params')} differ from the config's {params}"
        )
    if check_classes and list(stored["class_names"]) != list(data_config.class_names):
        raise ValueError(
            f"config.data.class_names={list(data_config.class_names)} but {dataset} was prepared "
            f"with classes {stored['class_names']} (the logits must follow the dataset's order)"
        )
    return builder


def _prepare_command(data_config: ml_collections.ConfigDict) -> str:
    """The tools/prepare_data.py command line that prepares `config.data`'s corpus."""
    dataset = data_config.dataset
    source = {"synthetic": "", "labelled_folder": f" --csv={data_config.get('csv')}"}
    skip = (
        " --skip_unknown_labels" if builder_options(data_config).get("skip_unknown_labels") else ""
    )
    return (
        f"python tools/prepare_data.py --dataset={dataset}"
        f"{source.get(dataset, ' --manual_dir=RAW')}{skip} "
        f"--data_dir={data_config.data_dir or '~/tensorflow_datasets'}"
    )


def _check_sources(builder: tfds.core.DatasetBuilder, data_config: ml_collections.ConfigDict):
    """Refuses a labelled-folder build whose CSV or audio files changed since it was prepared."""
    config = builder.builder_config
    stored = builder.info.metadata
    try:
        listing, _ = csv_corpus.labelled_folder(
            config.csv_path, stored["class_names"], config.skip_unknown_labels
        )
        change = sources.what_changed(
            stored, builder.data_dir, sources.record(listing, stored["class_names"])
        )
    except (ValueError, OSError) as error:
        change = str(error)
    if change is None:
        return
    raise ValueError(
        f"{data_config.csv} changed since it was prepared ({change}): re-run "
        f"{_prepare_command(data_config)} (with the same feature parameters)"
    )
