"""Input pipeline: prepared TFRecords to normalized, fixed-length numpy batches for one fold.

- Normalization: `features.Normalization` (`config.data.normalization`; see docs/data.md).
- Training takes a random `num_frames` crop of each utterance; evaluation scores the windows of
  emohrnet_jax.windows (the whole utterance, as `predict` does, or its centre crop). Shorter
  utterances are padded at the end with zeros (the mean after normalization).
- Training order and crops are a pure function of (seed, epoch): a resumed run sees the same data.
  The order is a shuffle, or (`sampling="balanced"`) `balance.balanced_order`'s class-balanced
  draws.
- Several hosts: every host reads the same shuffled order and keeps its rows of each global batch,
  so the hosts' batches together form the one-host batch. Evaluation covers every window of every
  example exactly once, the same way, its last batch padded; `mask` marks the real windows.
"""

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from emohrnet_jax import paths, windows
from emohrnet_jax.audio import features, synthetic
from emohrnet_jax.data import balance, builders, csv_corpus, protocols, remote, sources

UTTERANCE_KEYS = ("id", "speaker", "label")
SAMPLING = ("shuffle", "balanced")  # config.data.sampling's values


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


@dataclasses.dataclass
class FoldInput:
    """The batches of one fold: each split is its speakers' utterances, or where `ids` is set
    (a protocol that splits utterances, `protocols.fold_split`) the utterances it lists."""

    builder: tfds.core.DatasetBuilder
    speakers: dict[str, list[str]]
    class_names: tuple[str, ...]
    num_frames: int
    # Cross-corpus: stored label index -> model class index, -1 for a class left out.
    label_map: tuple[int, ...] | None = None
    normalization: features.Normalization = features.Normalization()  # noqa: RUF009 (frozen)
    ids: dict[str, list[str]] | None = None
    # What splits.json and results.json say of the protocol (`protocols.FoldSplit.about`).
    protocol: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"protocol": "speaker", "speaker_independent": True}
    )
    _counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def split(self, name: str) -> tf.data.Dataset:
        """Normalized float32 examples of a split (a key of `speakers`), in stored order."""
        normalized = lambda x: _normalized(x, self.normalization)  # noqa: E731
        return self.stored(name).map(normalized, num_parallel_calls=tf.data.AUTOTUNE)

    def utterances(self, name: str) -> list[dict[str, Any]]:
        """The `id`, `speaker` and (model class) `label` of each example of a split, in stored
        order: the rows `eval_batches`' `index` points to."""
        dataset = self.stored(name, {"mel": tfds.decode.SkipDecoding()})
        return [
            {"id": x["id"].decode(), "speaker": x["speaker"].decode(), "label": int(x["label"])}
            for x in tfds.as_numpy(dataset.map(lambda x: {k: x[k] for k in UTTERANCE_KEYS}))
        ]

    def stored(self, name: str, decoders: Any = None) -> tf.data.Dataset:
        """The stored examples of a split, labels mapped onto the model's classes."""
        ids = None if self.ids is None else self.ids[name]
        dataset = _utterances_of(self.builder, self.speakers[name], decoders, ids)
        if self.label_map is not None:
            table = tf.constant(self.label_map, tf.int64)
            dataset = dataset.map(lambda x: {**x, "label": tf.gather(table, x["label"])})
            dataset = dataset.filter(lambda x: x["label"] >= 0)
        return dataset

    def count(self, name: str) -> int:
        """Number of examples in a split (counted once)."""
        if name not in self._counts:
            self._counts[name] = int(self.split(name).reduce(0, lambda n, _: n + 1))
        return self._counts[name]

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        epoch: int,
        process_index: int = 0,
        process_count: int = 1,
        sampling: str = "shuffle",
    ) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of shuffled, randomly cropped training batches for this host.

        `batch_size` is the global batch; each host yields `batch_size // process_count` examples
        per step, and the incomplete last global batch is dropped. `sampling="balanced"` draws
        the epoch's examples (as many) from `balance.balanced_order` instead of a shuffle.
        """
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} does not divide over {process_count} hosts")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling={sampling!r} is not one of {SAMPLING}")
        epoch_seed = _epoch_seed(seed, epoch)
        host_batch = batch_size // process_count
        steps = self.count("train") // batch_size
        # Host p keeps rows p * host_batch... of each global batch: the hosts' rows, stacked in
        # process order, are the one-host batch row for row (hence the same augmentation).
        mine = lambda i: i // host_batch % process_count == process_index  # noqa: E731
        if sampling == "balanced":
            dataset = self._drawn(steps * batch_size, seed, epoch, mine)
        else:
            dataset = self.split("train").shuffle(self.count("train"), seed=epoch_seed)
            dataset = dataset.take(steps * batch_size).enumerate()
            dataset = dataset.filter(lambda i, _: mine(i))
        dataset = dataset.map(
            lambda i, x: _crop(x, self.num_frames, tf.stack([epoch_seed, tf.cast(i, tf.int64)])),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        dataset = dataset.batch(host_batch, drop_remainder=True)
        yield from tfds.as_numpy(dataset.prefetch(tf.data.AUTOTUNE))

    def _drawn(self, num_draws: int, seed: int, epoch: int, mine) -> tf.data.Dataset:
        """(position, example) at this host's positions of the class-balanced order; the examples
        they draw are held in memory (at most the split, as the shuffle's buffer is)."""
        order = balance.balanced_order(
            [u["label"] for u in self.utterances("train")], num_draws, seed, epoch
        )
        positions = np.flatnonzero(mine(np.arange(num_draws)))
        # One lookup per stored example, not a scan of the drawn indices.
        wanted = np.zeros(self.count("train"), bool)
        wanted[order[positions]] = True
        wanted = tf.constant(wanted)
        stored = self.split("train").enumerate()
        stored = stored.filter(lambda i, _: tf.gather(wanted, i))
        examples = dict(tfds.as_numpy(stored))
        return tf.data.Dataset.from_generator(
            lambda: ((i, examples[order[i]]) for i in positions),
            output_signature=(tf.TensorSpec([], tf.int64), stored.element_spec[1]),
        )

    def eval_batches(
        self,
        name: str,
        batch_size: int,
        windowing: windows.Windowing,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of the windows (`windowing`) of every example of a split, in stored order:
        `mel`, and each window's `label`, `index` (its example's row in `utterances`, -1 for
        padding) and `mask` (False for padding).

        Every host reads the whole split and keeps its rows of each global batch, as in
        `train_batches`, so that every host yields the same number of batches (the jitted step
        runs on all hosts together); the last global batch is padded.
        """
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} does not divide over {process_count} hosts")
        host_batch = batch_size // process_count
        shape = (self.builder.info.features["mel"].shape[0], windowing.num_frames)
        rows, position = [], 0
        for row in self._windows(name, windowing):
            if position // host_batch % process_count == process_index:
                rows.append(row)
            position += 1
            if position % batch_size == 0:
                yield _stacked(rows, host_batch, shape)
                rows = []
        if position % batch_size:
            yield _stacked(rows, host_batch, shape)

    def _windows(self, name: str, windowing: windows.Windowing) -> Iterator[tuple]:
        """`(window, label, index)` of every window of every example of a split, in order."""
        examples = tfds.as_numpy(self.stored(name).prefetch(tf.data.AUTOTUNE))
        for index, example in enumerate(examples):
            statistics = self.normalization.statistics(example["mel"])
            for window in windowing.windows(example["mel"], statistics):
                yield window, example["label"], index


def _stacked(rows: list[tuple], size: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """An evaluation batch of `size` rows: `rows` (window, label, index), then zero padding."""
    mel = np.zeros((size, *shape), np.float32)
    for i, (window, _, _) in enumerate(rows):
        mel[i] = window
    padding = size - len(rows)
    return {
        "mel": mel,
        "label": np.array([row[1] for row in rows] + [0] * padding, np.int64),
        "index": np.array([row[2] for row in rows] + [-1] * padding, np.int32),
        "mask": np.arange(size) < len(rows),
    }


def create_fold_input(config: ml_collections.ConfigDict) -> FoldInput:
    """Loads the prepared dataset of `config.data` and selects fold `config.data.fold` of its
    protocol (`config.data.protocol`)."""
    builder = load_builder(config.data)
    speakers = builder.info.metadata["speakers"]
    rows = []
    if protocols.needs_rows(config.data):
        every = FoldInput(builder, {"all": speakers}, (), config.data.num_frames)
        rows = [protocols.Row(**utterance) for utterance in every.utterances("all")]
    partitions = builder.info.metadata.get(builders.PARTITIONS_KEY)
    fold = protocols.fold_split(config.data, speakers, rows, partitions)
    return FoldInput(
        builder=builder,
        speakers=fold.speakers,
        class_names=tuple(builder.info.features["label"].names),
        num_frames=config.data.num_frames,
        ids=fold.ids,
        protocol=fold.about,
    )


def _utterances_of(
    builder: tfds.core.DatasetBuilder,
    speakers: Sequence[str],
    decoders: Any = None,
    ids: Sequence[str] | None = None,
) -> tf.data.Dataset:
    """The stored utterances of `speakers` (or, given `ids`, of those ids), in stored order."""
    # No tfds auto-cache: every epoch and split builds a new dataset, so a cache would only copy
    # the data (and warn when an epoch stops before its end).
    dataset = builder.as_dataset(
        split=builders.SPLIT,
        shuffle_files=False,
        decoders=decoders,
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    if ids is not None:
        # A hash lookup per example: a split lists thousands of ids.
        keys = tf.constant(list(ids), tf.string)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int64)), 0
        )
        return dataset.filter(lambda x: table.lookup(x["id"]) > 0)
    wanted = tf.constant(list(speakers))
    return dataset.filter(lambda x: tf.reduce_any(tf.equal(x["speaker"], wanted)))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _normalized(example: dict[str, tf.Tensor], normalization: features.Normalization) -> dict:
    mel = tf.cast(example["mel"], tf.float32)
    if normalization.mode == features.TRAINING_BAND:
        mean, scale = normalization.statistics(mel)
        mean, inverse = tf.constant(mean, tf.float32), tf.constant(1 / scale, tf.float32)
    else:
        axes = [0, 1] if normalization.mode == features.UTTERANCE else [1]
        mean, variance = tf.nn.moments(mel, axes=axes, keepdims=True)
        inverse = tf.math.rsqrt(variance + features.NORMALIZATION_EPSILON)
    return {k: example[k] for k in UTTERANCE_KEYS} | {"mel": (mel - mean) * inverse}


def _crop(example: dict[str, tf.Tensor], num_frames: int, seed: tf.Tensor):
    """A random (seeded) crop to `num_frames`, zero-padding shorter utterances."""
    mel = example["mel"]
    excess = tf.maximum(tf.shape(mel)[1] - num_frames, 0)
    start = tf.random.stateless_uniform([], seed, 0, excess + 1, dtype=tf.int32)
    mel = mel[:, start : start + num_frames]
    mel = tf.pad(mel, [[0, 0], [0, num_frames - tf.shape(mel)[1]]])
    return {**example, "mel": tf.ensure_shape(mel, [mel.shape[0], num_frames])}
