"""On-device augmentation of log-Mel spectrograms: random time shift and SpecAugment masking.

Pure jnp functions of an explicit PRNG key, meant to run inside the jitted train step with one key
per example (`augment_batch` vmaps over the batch). Every spectrogram is `(n_mels, n_frames)`.

The time shift moves the spectrogram by s ~ U{-max_shift..max_shift} frames and fills the frames it
vacates with the fill value (a padded shift, not a roll): a roll would splice the utterance's end
onto its start, an abrupt onset that never occurs at test time, while a padded shift looks like a
longer leading or trailing pause, the same thing the input pipeline does when it pads short clips.
"""

import jax
import jax.numpy as jnp
import ml_collections

MASK_VALUES = ("zero", "mean")


def check_augment_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first bad field of an augmentation config."""
    if config.mask_value not in MASK_VALUES:
        raise ValueError(
            f"config.augment.mask_value={config.mask_value!r} is not one of {MASK_VALUES}"
        )
    for field in (
        "max_time_shift",
        "num_freq_masks",
        "freq_mask_width",
        "num_time_masks",
        "time_mask_width",
    ):
        value = config[field]
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"config.augment.{field} must be an integer >= 0, got {value!r}")
    if not 0.0 <= config.max_time_mask_fraction <= 1.0:
        raise ValueError(
            "config.augment.max_time_mask_fraction must be in [0, 1], "
            f"got {config.max_time_mask_fraction!r}"
        )


def fill_value(mel: jax.Array, mask_value: str) -> jax.Array:
    """The value written into masked or vacated cells: zero, or the spectrogram's mean."""
    if mask_value == "mean":
        return jnp.mean(mel)
    if mask_value == "zero":
        return jnp.zeros((), mel.dtype)
    raise ValueError(f"mask_value={mask_value!r} is not one of {MASK_VALUES}")


def time_shift(key: jax.Array, mel: jax.Array, max_shift: int, fill: jax.Array) -> jax.Array:
    """Shifts `mel` along time by s ~ U{-max_shift..max_shift}, filling vacated frames."""
    n_frames = mel.shape[-1]
    shift = jax.random.randint(key, (), -max_shift, max_shift + 1)
    source = jnp.arange(n_frames) - shift
    inside = (source >= 0) & (source < n_frames)
    return jnp.where(inside, jnp.roll(mel, shift, axis=-1), fill).astype(mel.dtype)


def band_mask(key: jax.Array, size: int, num_masks: int, max_width: int) -> jax.Array:
    """Boolean `(size,)` union of `num_masks` bands of width w ~ U{0..max_width}.

    Each band starts at w0 ~ U{0..size - w}, so it always lies inside [0, size).
    """
    width_key, start_key = jax.random.split(key)
    max_width = min(max_width, size)
    widths = jax.random.randint(width_key, (num_masks,), 0, max_width + 1)
    starts = jax.random.randint(start_key, (num_masks,), 0, size - widths + 1)
    positions = jnp.arange(size)
    inside = (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])
    return inside.any(axis=0)


def freq_mask(
    key: jax.Array, mel: jax.Array, num_masks: int, max_width: int, fill: jax.Array
) -> jax.Array:
    """SpecAugment frequency masking: `num_masks` bands of f ~ U{0..F} Mel bins set to `fill`."""
    mask = band_mask(key, mel.shape[0], num_masks, max_width)
    return jnp.where(mask[:, None], fill, mel).astype(mel.dtype)


def time_mask(
    key: jax.Array,
    mel: jax.Array,
    num_masks: int,
    max_width: int,
    max_fraction: float,
    fill: jax.Array,
) -> jax.Array:
    """SpecAugment time masking: bands of t ~ U{0..T} frames, T <= max_fraction * n_frames."""
    n_frames = mel.shape[1]
    max_width = min(max_width, int(max_fraction * n_frames))
    mask = band_mask(key, n_frames, num_masks, max_width)
    return jnp.where(mask[None, :], fill, mel).astype(mel.dtype)


def augment_example(key: jax.Array, mel: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
    """Time shift then SpecAugment on one `(n_mels, n_frames)` spectrogram, as `config` enables."""
    shift_key, freq_key, time_key = jax.random.split(key, 3)
    fill = fill_value(mel, config.mask_value)
    if config.time_shift:
        mel = time_shift(shift_key, mel, config.max_time_shift, fill)
    if config.spec_augment:
        mel = freq_mask(freq_key, mel, config.num_freq_masks, config.freq_mask_width, fill)
        mel = time_mask(
            time_key,
            mel,
            config.num_time_masks,
            config.time_mask_width,
            config.max_time_mask_fraction,
            fill,
        )
    return mel


def augment_batch(
    key: jax.Array, mel: jax.Array, config: ml_collections.ConfigDict, train: bool
) -> jax.Array:
    """Augments a `(batch, n_mels, n_frames)` batch with one key per example; identity unless train.

    Args:
      key: PRNG key for this batch (e.g. `jax.random.fold_in(root_key, step)`).
      mel: log-Mel batch.
      config: the `config.augment` section.
      train: False at evaluation, where the batch is returned unchanged.
    """
    if not train:
        return mel
    if mel.ndim != 3:
        raise ValueError(f"augment_batch expects (batch, n_mels, n_frames), got shape {mel.shape}")
    check_augment_config(config)
    keys = jax.random.split(key, mel.shape[0])
    return jax.vmap(lambda k, m: augment_example(k, m, config))(keys, mel)
