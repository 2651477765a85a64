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
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from emohrnet_jax import mixture_spec, windows
from emohrnet_jax.audio import features
from emohrnet_jax.data import balance, builders, loading, protocols, sources

UTTERANCE_KEYS = ("id", "speaker", "label")
SAMPLING = ("shuffle", "balanced")  # config.data.sampling's values


@dataclasses.dataclass(kw_only=True)
class Input:
    """The batches of one fold, from one corpus (`FoldInput`) or several (`mixture`): each split
    is what `stored` gives for it; the rest is common."""

    speakers: dict[str, list[str]]
    class_names: tuple[str, ...]
    num_frames: int
    normalization: features.Normalization = features.Normalization()  # noqa: RUF009 (frozen)
    # What splits.json and results.json say of the protocol (`protocols.FoldSplit.about`).
    protocol: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"protocol": "speaker", "speaker_independent": True}
    )
    _counts: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def n_mels(self) -> int:
        """The stored log-Mel height."""
        raise NotImplementedError

    @property
    def corpora(self) -> tuple[str, ...]:
        """The names of a mixture's corpora, whose results are also given one by one; () for
        one corpus."""
        return ()

    @property
    def build(self) -> str | None:
        """The source fingerprint of the build(s) read (`sources`), checked on resume."""
        raise NotImplementedError

    def stored(self, name: str, decoders: Any = None) -> tf.data.Dataset:
        """The stored examples of a split, labels mapped onto the model's classes."""
        raise NotImplementedError

    def training_order(self, num_draws: int, seed: int, epoch: int, sampling: str):
        """Indices into the training split, one per draw of the epoch, or None for a shuffle."""
        if sampling != "balanced":
            return None
        labels = [u["label"] for u in self.utterances("train")]
        return balance.balanced_order(labels, num_draws, seed, epoch)

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
        per step, and the incomplete last global batch is dropped. Where `training_order` gives
        an order (`sampling="balanced"`, a mixture's shares), the epoch's examples (as many) are
        drawn in that order instead of a shuffle.
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
        order = self.training_order(steps * batch_size, seed, epoch, sampling)
        if order is not None:
            dataset = self._drawn(order, mine)
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

    def _drawn(self, order: np.ndarray, mine) -> tf.data.Dataset:
        """(position, example) at this host's positions of `order`; the examples they draw are
        held in memory (at most the split, as the shuffle's buffer is)."""
        positions = np.flatnonzero(mine(np.arange(len(order))))
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
        shape = (self.n_mels, windowing.num_frames)
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


@dataclasses.dataclass(kw_only=True)
class FoldInput(Input):
    """A fold of one prepared corpus: each split is its speakers' utterances, or where `ids` is
    set (a protocol that splits utterances, `protocols.fold_split`) the utterances it lists."""

    builder: tfds.core.DatasetBuilder
    # Cross-corpus: stored label index -> model class index, -1 for a class left out.
    label_map: tuple[int, ...] | None = None
    ids: dict[str, list[str]] | None = None

    @property
    def n_mels(self) -> int:
        return self.builder.info.features["mel"].shape[0]

    @property
    def build(self) -> str | None:
        return self.builder.info.metadata.get(sources.METADATA_KEY)

    def has(self, name: str) -> bool:
        """Whether split `name` selects any utterance."""
        return bool(self.speakers[name] if self.ids is None else self.ids[name])

    def stored(self, name: str, decoders: Any = None) -> tf.data.Dataset:
        """The stored examples of a split, labels mapped onto the model's classes."""
        ids = None if self.ids is None else self.ids[name]
        dataset = _utterances_of(self.builder, self.speakers[name], decoders, ids)
        if self.label_map is not None:
            table = tf.constant(self.label_map, tf.int64)
            dataset = dataset.map(lambda x: {**x, "label": tf.gather(table, x["label"])})
            dataset = dataset.filter(lambda x: x["label"] >= 0)
        return dataset


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


def create_fold_input(config: ml_collections.ConfigDict) -> Input:
    """Loads the prepared dataset of `config.data` and selects fold `config.data.fold` of its
    protocol (`config.data.protocol`); several corpora (`mixture_spec`) make a `mixture` input."""
    if mixture_spec.is_mixture(config.data):
        from emohrnet_jax.data import mixture  # it builds on this module's Input

        return mixture.create_input(config)
    builder = loading.load_builder(config.data)
    fold = select_fold(builder, config.data)
    return FoldInput(
        builder=builder,
        speakers=fold.speakers,
        class_names=tuple(builder.info.features["label"].names),
        num_frames=config.data.num_frames,
        ids=fold.ids,
        protocol=fold.about,
    )


def select_fold(
    builder: tfds.core.DatasetBuilder, data_config: ml_collections.ConfigDict
) -> protocols.FoldSplit:
    """Fold `data_config.fold` of a prepared corpus under `data_config.protocol`."""
    speakers = builder.info.metadata["speakers"]
    rows = []
    if protocols.needs_rows(data_config):
        every = FoldInput(builder=builder, speakers={"all": speakers}, class_names=(), num_frames=1)
        rows = [protocols.Row(**utterance) for utterance in every.utterances("all")]
    partitions = builder.info.metadata.get(builders.PARTITIONS_KEY)
    return protocols.fold_split(data_config, speakers, rows, partitions)


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
