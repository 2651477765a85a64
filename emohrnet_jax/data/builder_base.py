"""What every corpus's tensorflow-datasets builder shares (the builders are in `builders`).

Each builder lists its corpus with `corpora` (or plans the synthetic one), extracts log-Mel features
in worker processes (every core) or on Apache Beam (`beam_build`), and writes one split,
`utterances`, of variable-length examples: `mel` (float16, `(n_mels, n_frames)`), `num_frames`,
`label`, `speaker`, `id`, `file`, `duration`. Folds are selected at load time (`splits`,
`protocols`), so one build serves every fold.

The feature parameters are the builder config (its name carries a digest of them, and for a
labelled folder of the CSV's real path) and are stored in the dataset's metadata; loading with
other parameters is an error, never a silent mismatch. Every file left out is counted by reason in
`prepare_summary.json` beside the TFRecords. A build records what it was made from (`sources`), so
preparing again after the files or labels changed rebuilds it; it is made in a temporary folder
under its lock and replaces the previous one only when complete (a killed build keeps the old).
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from emohrnet_jax import storage
from emohrnet_jax.audio import extraction_pool, features, synthetic
from emohrnet_jax.data import build_summary, corpora, sources

SPLIT = "utterances"
SUMMARY_FILE = "prepare_summary.json"
# Metadata of a corpus released with partitions: {partition: sorted ids} (`protocols` reads it).
PARTITIONS_KEY = "partitions"


@dataclasses.dataclass(eq=False)
class EmotionConfig(tfds.core.BuilderConfig):
    """Builder config: feature parameters plus corpus options (unused ones keep their defaults)."""

    feature_params: features.FeatureParams = dataclasses.field(
        default_factory=features.FeatureParams
    )
    label_set: str = "4class"  # IEMOCAP only.
    corpus: synthetic.CorpusSpec = dataclasses.field(default_factory=synthetic.CorpusSpec)
    skip_unknown_labels: bool = False
    csv_path: str = ""  # labelled_folder only: the CSV's real path.


def make_config(
    dataset: str, feature_params: features.FeatureParams | None = None, **options: Any
) -> EmotionConfig:
    """The builder config of `dataset` for these parameters (the registered one if it exists)."""
    builder_cls = tfds.builder_cls(dataset)
    feature_params = feature_params or features.FeatureParams()
    fields = {f.name for f in dataclasses.fields(EmotionConfig)}
    unknown = set(options) - fields
    if unknown:
        raise ValueError(f"unknown builder options for {dataset}: {sorted(unknown)}")
    identity = {"features": feature_params.as_dict(), **builder_cls.identity(options)}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    name = f"mels{feature_params.n_mels}_sr{feature_params.sample_rate}_{digest}"
    for registered in builder_cls.BUILDER_CONFIGS:
        if registered.name == name:
            return registered
    return EmotionConfig(
        name=name,
        version=builder_cls.VERSION,
        description=json.dumps(identity, sort_keys=True),
        feature_params=feature_params,
        **options,
    )


class EmotionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared logic: features, parallel extraction, metadata and the build summary."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIG_CLS = EmotionConfig

    # Whether the corpus is read from files (whose changes the source fingerprint tracks).
    READS_FILES = True

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        listing: corpora.Listing | None = None,
        fingerprint: dict[str, Any] | None = None,
        beam_options: Any = None,
        **kwargs: Any,
    ):
        """`num_workers`: extraction processes (None: every core; 0: in this process); or
        `beam_options` (`beam_build.pipeline_options`): extraction on Apache Beam. To build:
        `listing` (from `listing`) and its `fingerprint` (`sources.record`, stored with it)."""
        self._num_workers = os.cpu_count() if num_workers is None else num_workers
        self._beam_options = beam_options
        self._listing, self._fingerprint = listing, fingerprint
        self._summary: dict[str, Any] = {}
        super().__init__(**kwargs)

    @classmethod
    def identity(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The builder options that change the dataset's content (part of the config name)."""
        return {"skip_unknown_labels": options.get("skip_unknown_labels", False)}

    def class_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        params = self.builder_config.feature_params
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "mel": tfds.features.Tensor(
                        shape=(params.n_mels, None), dtype=features.STORED_DTYPE
                    ),
                    "num_frames": np.int32,
                    "label": _class_label(self.class_names()),
                    "speaker": tfds.features.Text(),
                    "id": tfds.features.Text(),
                    "file": tfds.features.Text(),
                    "duration": np.float32,
                }
            ),
            supervised_keys=("mel", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        if self._beam_options is None:
            return {SPLIT: self._generate_examples(self._listing)}
        from emohrnet_jax.data import beam_build  # apache-beam: the [beam] extra

        jobs = list(zip(self._listing.utterances, self._jobs(self._listing), strict=True))
        # The outcomes' tally goes to tfds's temporary folder (read back, then removed).
        return {SPLIT: beam_build.examples(jobs, self._extract, example, self.data_dir, self.name)}

    def _process_pipeline_result(self, pipeline_result) -> None:
        """tfds's hook once its Beam pipeline is done: the summary, from the tally it wrote."""
        from emohrnet_jax.data import beam_build

        self._summarize(self._listing, beam_build.read_tally(self.data_dir))

    def listing(self, manual_dir: str | None) -> corpora.Listing:
        """The corpus's utterances, listed from the raw files in `manual_dir`."""
        raise NotImplementedError

    def _jobs(self, listing: corpora.Listing) -> Iterator[tuple[Any, ...]]:
        """Arguments of `features.extract` for each utterance."""
        params = self.builder_config.feature_params
        return ((u.path, params) for u in listing.utterances)

    _extract = staticmethod(features.extract)

    def _generate_examples(self, listing: corpora.Listing):
        outcomes = []
        for utterance, result in zip(listing.utterances, self._map(listing), strict=True):
            outcomes.append(build_summary.outcome(utterance, result))
            if "error" not in result:
                yield utterance.id, example(utterance, result)
        self._summarize(listing, build_summary.merge(outcomes))

    def _summarize(self, listing: corpora.Listing, merged: dict[str, Any]) -> None:
        name, config = self.name, self.builder_config.name
        self._summary = build_summary.summarize(name, config, listing, merged)

    def _map(self, listing: corpora.Listing) -> Iterator[dict[str, Any]]:
        """Feature extraction in order, in worker processes when `num_workers` > 0."""
        jobs = list(self._jobs(listing))
        if not self._num_workers:
            yield from (self._extract(*job) for job in jobs)
            return
        with extraction_pool.pool(self._num_workers) as pool:
            chunk = max(1, min(32, len(jobs) // (4 * self._num_workers)))
            yield from pool.map(self._extract, *zip(*jobs, strict=True), chunksize=chunk)

    def _download_and_prepare(self, dl_manager, download_config=None):
        if self._beam_options is not None:  # tfds runs a PTransform split on Beam with these.
            download_config = dataclasses.replace(download_config, beam_options=self._beam_options)
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        # Inside tfds's temporary folder: the summary and metadata move with the TFRecords.
        self.info.metadata.update(
            {
                "feature_params": self.builder_config.feature_params.as_dict(),
                "speakers": self._summary["speakers"],
                "class_names": list(self.class_names()),
            }
        )
        if self._listing is not None and self._listing.partitions:
            self.info.metadata[PARTITIONS_KEY] = by_partition(self._listing.partitions)
        if self._fingerprint is not None:
            self.info.metadata[sources.METADATA_KEY] = self._fingerprint["digest"]
            sources.save(self.data_dir, self._fingerprint)
        storage.write_json_atomically(os.path.join(self.data_dir, SUMMARY_FILE), self._summary)


def example(utterance: corpora.Utterance, result: dict[str, Any]) -> dict[str, Any]:
    """The stored example of an utterance whose features were extracted (`result`)."""
    mel = result["mel"]
    return {
        "mel": mel.astype(features.STORED_DTYPE),
        "num_frames": mel.shape[1],
        "label": utterance.label,
        "speaker": utterance.speaker,
        "id": utterance.id,
        "file": utterance.path,
        "duration": result["duration"],
    }


def by_partition(partitions: dict[str, str]) -> dict[str, list[str]]:
    """`{partition: sorted ids}` of `Listing.partitions` (utterance id -> partition)."""
    grouped: dict[str, list[str]] = {name: [] for name in sorted(set(partitions.values()))}
    for utterance_id, name in sorted(partitions.items()):
        grouped[name].append(utterance_id)
    return grouped


def _class_label(names: tuple[str, ...] | None) -> tfds.features.ClassLabel:
    # Without names (reading a labelled_folder build), tfds restores them from the stored files.
    return tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel()
