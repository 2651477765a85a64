"""Tests of the Flax HRNet: per-stage shapes, parameter counts, BatchNorm modes, dtypes, errors.

The faster convolutions of `fast_conv` are tested in test_fast_conv.py.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emohrnet_jax.models import VARIANTS, HRNet, create_model, fast_conv
from emohrnet_jax.models.hrnet import resize_to
from tests import helpers

N_MELS = 128


def _abstract_forward(variant: str, n_frames: int, batch: int = 2):
    """Shapes of the parameters, logits and sown intermediates, by tracing only (no compile)."""
    model = HRNet(spec=VARIANTS[variant], num_classes=4, n_mels=N_MELS)
    mel = jax.ShapeDtypeStruct((batch, N_MELS, n_frames), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), mel)
    logits, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, mel
    )
    return variables, logits, state["intermediates"]


def _branch_sizes(size: int, stem_stride: int = 4, branches: int = 4) -> list[int]:
    sizes = [math.ceil(size / stem_stride)]
    for _ in range(branches - 1):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("n_frames", [187, 301])
def test_every_stage_has_the_branch_strides_and_widths(variant, n_frames):
    spec = VARIANTS[variant]
    _, logits, inter = _abstract_forward(variant, n_frames)
    freqs, times = _branch_sizes(N_MELS), _branch_sizes(n_frames)

    chex.assert_shape(inter["stem"][0], (2, freqs[0], times[0], spec.stem_width))
    chex.assert_shape(inter["stage1"][0][0], (2, freqs[0], times[0], spec.stage1_planes * 4))
    for s, stage in enumerate(spec.stages, start=2):
        branches = inter[f"stage{s}"][0]
        assert len(branches) == s
        chex.assert_shape(
            list(branches),
            [(2, freqs[i], times[i], width) for i, width in enumerate(stage.widths)],
        )
    chex.assert_shape(inter["fuse"][0], (2, freqs[0], times[0], sum(spec.stages[-1].widths)))
    chex.assert_shape(logits, (2, 4))


def test_odd_lengths_halve_with_ceiling():
    # Written out once by hand, independently of _branch_sizes.
    _, _, inter = _abstract_forward("tiny", 301)
    assert [b.shape[1:3] for b in inter["stage4"][0]] == [(32, 76), (16, 38), (8, 19), (4, 10)]


# Recorded from this implementation; they match the published HRNetV2 sizes (W18-Small-v1 1.5M,
# W18-Small-v2 3.9M, W18 9.6M), whose head is the same 1x1 fuse conv.
PARAM_COUNTS = {
    "tiny": 60_524,
    "small": 238_868,
    "w18_small_v1": 1_535_812,
    "w18_small_v2": 3_934_092,
    "w18": 9_635_632,
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parameter_counts(variant):
    variables, _, _ = _abstract_forward(variant, 187)
    count = sum(p.size for p in jax.tree.leaves(variables["params"]))
    assert count == PARAM_COUNTS[variant]
    assert set(variables) == {"params", "batch_stats"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "ravdess", "iemocap", "emovo"])
def test_create_model_follows_the_config(name):
    config = helpers.load_config(name)
    model = create_model(config)
    assert model.spec == VARIANTS[config.model.variant]
    mel = jax.ShapeDtypeStruct((3, config.data.n_mels, config.data.num_frames), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), mel)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, mel)
    chex.assert_shape(logits, (3, len(config.data.class_names)))
    assert logits.dtype == jnp.float32
    backend = jax.default_backend()
    assert model.conv is fast_conv.fields("auto", backend)["conv"]
    config.model.im2col = "on"
    assert create_model(config).conv is fast_conv.conv_as_patch_matmul
    del config.model["im2col"]  # A run saved before the setting existed: "auto".
    assert create_model(config).conv is fast_conv.fields("auto", backend)["conv"]
    serving = create_model(config, serving=True)
    x = jnp.ones(3)
    assert serving.conv is fast_conv.conv_1x1_as_matmul and serving.materialize(x) is x
    assert serving.fold_norm and not create_model(config).fold_norm


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model.variant", "w32", "unknown config.model.variant"),
        ("model.num_classes", 5, "config.data.class_names lists 4"),
        ("model.dtype", "float64", "config.model.dtype"),
        ("model.stem_strides", ((2, 2, 2),), "stem_strides"),
        ("model.im2col", "yes", "config.model.im2col='yes' is not one of"),
    ],
)
def test_create_model_rejects_bad_fields(field, value, message):
    config = helpers.load_config("default")
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(ValueError, match=message):
        create_model(config)


class Tiny:
    """The tiny variant with jitted functions (eager flax dispatches and compiles op by op)."""

    def __init__(self, dtype=jnp.float32):
        self.model = HRNet(spec=VARIANTS["tiny"], num_classes=4, n_mels=N_MELS, dtype=dtype)
        self.mel = jax.random.normal(jax.random.key(1), (4, N_MELS, 187))
        # unsafe_rbg compiles init several times faster than threefry (per-parameter RNG in one
        # XLA program is the cost); the test only needs some deterministic parameters.
        init_key = jax.random.key(0, impl="unsafe_rbg")
        self.variables = jax.jit(self.model.init)(init_key, self.mel)
        self.evaluate = jax.jit(lambda v, x: self.model.apply(v, x))
        self.train = jax.jit(
            lambda v, x: self.model.apply(v, x, train=True, mutable=["batch_stats"])
        )
        self.intermediates = jax.jit(lambda v, x: self.model.apply(v, x, mutable=["intermediates"]))


@pytest.fixture(scope="module")
def tiny():
    return Tiny()


@pytest.mark.slow
def test_forward_is_finite_and_deterministic(tiny):
    logits = tiny.evaluate(tiny.variables, tiny.mel)
    chex.assert_shape(logits, (4, 4))
    chex.assert_tree_all_finite(logits)
    chex.assert_trees_all_equal(logits, tiny.evaluate(tiny.variables, tiny.mel))
    assert not np.allclose(logits[0], logits[1]), "different inputs should give different logits"


@pytest.mark.slow
@pytest.mark.parametrize("n_frames", [1, 301])
def test_any_length_runs(tiny, n_frames):
    mel = jax.random.normal(jax.random.key(2), (2, N_MELS, n_frames))
    logits = tiny.evaluate(tiny.variables, mel)
    chex.assert_shape(logits, (2, 4))
    chex.assert_tree_all_finite(logits)


@pytest.mark.slow
def test_train_mode_uses_batch_statistics_and_updates_them(tiny):
    variables, mel = tiny.variables, tiny.mel
    logits, updates = tiny.train(variables, mel)
    chex.assert_shape(logits, (4, 4))
    chex.assert_trees_all_equal_structs(updates["batch_stats"], variables["batch_stats"])
    # Running mean of the first BN after one step: 0.9 * 0 + 0.1 * batch mean of the stem conv.
    stem = jax.lax.conv_general_dilated(
        mel[..., None],
        variables["params"]["stem0_conv"]["kernel"],
        (2, 2),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    chex.assert_trees_all_close(
        updates["batch_stats"]["stem0_bn"]["mean"], 0.1 * stem.mean(axis=(0, 1, 2)), atol=1e-5
    )

    # Eval mode normalizes with running statistics: an example's logits do not depend on the batch.
    together = tiny.evaluate(variables, mel)
    alone = tiny.evaluate(variables, jnp.concatenate([mel[:1], -mel[1:]]))
    chex.assert_trees_all_close(alone[0], together[0], atol=1e-5)
    # Train mode normalizes with batch statistics: they do.
    alone_train, _ = tiny.train(variables, jnp.concatenate([mel[:1], -mel[1:]]))
    assert not np.allclose(alone_train[0], logits[0], atol=1e-4)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters():
    tiny = Tiny(dtype=jnp.bfloat16)
    chex.assert_trees_all_equal_dtypes(
        tiny.variables["params"],
        jax.tree.map(lambda p: p.astype(jnp.float32), tiny.variables["params"]),
    )
    logits, state = tiny.intermediates(tiny.variables, tiny.mel)
    assert logits.dtype == jnp.float32
    assert state["intermediates"]["fuse"][0].dtype == jnp.bfloat16
    chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize(
    "shape, message",
    [((2, 64, 100), "n_mels=128 but got 64"), ((128, 100), "shape \\(batch, n_mels, n_frames\\)")],
)
def test_bad_input_shapes_fail_with_a_clear_error(tiny, shape, message):
    with pytest.raises(ValueError, match=message):
        tiny.evaluate(tiny.variables, jnp.zeros(shape))


def test_resize_to_twice_the_size_is_nearest_neighbour_repetition():
    x = jnp.arange(12.0).reshape(1, 2, 3, 2)
    up = resize_to(x, 4, 6, "nearest")
    chex.assert_trees_all_equal(up, jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
