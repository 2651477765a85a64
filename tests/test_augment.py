"""Tests of the on-device augmentation: bounds, determinism, shapes and dtypes, jit and vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emohrnet_jax import augment
from tests import helpers

N_MELS, N_FRAMES = 64, 100


def _config(**overrides):
    """The default augmentation with a zero fill (visible against `_mel`), plus overrides."""
    config = helpers.load_config("default").augment
    config.update({"mask_value": "zero", **overrides})
    return config


def _mel(batch=None, dtype=jnp.float32):
    shape = (N_MELS, N_FRAMES) if batch is None else (batch, N_MELS, N_FRAMES)
    # Strictly positive and distinct cells, so a zero fill is always visible.
    return (jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape) + 1.0).astype(dtype)


def _keys(n):
    return jax.random.split(jax.random.key(0), n)


def _over_keys(fn, n):
    """Jitted `fn(key)` over `n` keys (eager vmap would compile every primitive separately)."""
    return np.asarray(jax.jit(jax.vmap(fn))(_keys(n)))


def _jitted_batch(config):
    return jax.jit(lambda key, mel: augment.augment_batch(key, mel, config, train=True))


def _runs(mask):
    """(start, length) of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2] - edges[::2], strict=True))


def test_band_mask_is_one_contiguous_band_within_bounds_covering_every_width():
    masks = _over_keys(lambda k: augment.band_mask(k, 20, 1, 5), 2000)
    widths = masks.sum(axis=1)
    assert widths.max() == 5 and widths.min() == 0
    assert set(widths) == set(range(6)), "every width 0..F must be drawn"
    for mask in masks:
        assert len(_runs(mask)) <= 1
    # Every position can be covered: a band can start at 0 and end at the last frame.
    assert masks[:, 0].any() and masks[:, -1].any()


def test_band_mask_width_is_capped_by_the_size():
    masks = _over_keys(lambda k: augment.band_mask(k, 4, 1, 10), 500)
    assert int(masks.sum(axis=1).max()) == 4


def test_freq_masks_cover_whole_rows_and_at_most_num_masks_times_F():
    config = _config(time_shift=False, num_time_masks=0, num_freq_masks=2, freq_mask_width=7)
    masked = _over_keys(lambda k: augment.augment_example(k, _mel(), config), 300) == 0
    rows = masked.any(axis=2)
    np.testing.assert_array_equal(masked.all(axis=2), rows)  # whole rows only
    assert 7 < rows.sum(axis=1).max() <= 14
    assert not masked.all(axis=1).any(), "no column may be masked whole"


def test_time_masks_respect_width_and_fraction_of_the_length():
    config = _config(
        time_shift=False,
        num_freq_masks=0,
        num_time_masks=1,
        time_mask_width=50,
        max_time_mask_fraction=0.1,
    )
    masked = _over_keys(lambda k: augment.augment_example(k, _mel(), config), 500) == 0
    columns = masked.any(axis=1)
    np.testing.assert_array_equal(masked.all(axis=1), columns)  # whole columns only
    assert columns.sum(axis=1).max() == 10  # min(T=50, 0.1 * 100 frames), and reached


def test_time_shift_moves_the_spectrogram_and_fills_the_vacated_frames():
    mel = _mel()
    shifts = set()
    for key in _keys(200):
        out = np.asarray(augment.time_shift(key, mel, 3, jnp.float32(0.0)))
        filled = np.flatnonzero((out == 0).all(axis=0))
        shift = len(filled) if filled.size and filled[0] == 0 else -len(filled)
        assert abs(shift) <= 3
        np.testing.assert_array_equal(out, np.asarray(augment.time_shift(key, mel, 3, 0.0)))
        expected = np.zeros_like(out)
        if shift >= 0:
            expected[:, shift:] = np.asarray(mel)[:, : N_FRAMES - shift]
        else:
            expected[:, :shift] = np.asarray(mel)[:, -shift:]
        np.testing.assert_array_equal(out, expected)
        shifts.add(shift)
    assert shifts == set(range(-3, 4))


def test_mean_fill_writes_the_spectrogram_mean():
    config = _config(time_shift=False, num_time_masks=0, freq_mask_width=10, mask_value="mean")
    mel = _mel()
    out = np.asarray(augment.augment_example(jax.random.key(3), mel, config))
    changed = out != np.asarray(mel)
    assert changed.any()
    np.testing.assert_allclose(out[changed], float(jnp.mean(mel)), rtol=1e-6)


def test_same_key_same_output_other_keys_other_outputs():
    config = _config()
    mel = _mel(batch=8)
    step = _jitted_batch(config)
    first = step(jax.random.key(7), mel)
    again = step(jax.random.key(7), mel)
    other = step(jax.random.key(8), mel)
    chex.assert_trees_all_equal(first, again)
    assert not np.array_equal(first, other)


def test_each_example_gets_its_own_key():
    config = _config()
    mel = jnp.broadcast_to(_mel(), (16, N_MELS, N_FRAMES))
    out = np.asarray(_jitted_batch(config)(jax.random.key(0), mel))
    assert len({o.tobytes() for o in out}) == 16


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes_unchanged_under_jit_and_vmap(batch, dtype):
    config = _config()
    mel = _mel(batch=batch, dtype=dtype)
    out = _jitted_batch(config)(jax.random.key(0), mel)
    chex.assert_shape(out, mel.shape)
    chex.assert_type(out, dtype)
    chex.assert_tree_all_finite(out)
    assert not np.array_equal(np.asarray(out, np.float32), np.asarray(mel, np.float32))


def test_evaluation_is_the_identity():
    mel = _mel(batch=4)
    out = augment.augment_batch(jax.random.key(0), mel, _config(), train=False)
    chex.assert_trees_all_equal(out, mel)


def test_disabled_augmentation_is_the_identity_in_training():
    mel = _mel(batch=4)
    config = _config(time_shift=False, spec_augment=False)
    chex.assert_trees_all_equal(_jitted_batch(config)(jax.random.key(0), mel), mel)


@pytest.mark.parametrize(
    "field, value",
    [
        ("mask_value", "noise"),
        ("num_freq_masks", -1),
        ("time_mask_width", -3),
        ("max_time_mask_fraction", 1.5),
    ],
)
def test_bad_config_fields_are_named(field, value):
    config = _config()
    config.unlock()
    config[field] = value
    with pytest.raises(ValueError, match=f"config.augment.{field}"):
        augment.augment_batch(jax.random.key(0), _mel(batch=2), config, train=True)
