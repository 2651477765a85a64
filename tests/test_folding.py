"""BatchNorm folded into the convolutions for inference: the same logits, no BatchNorm left."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emohrnet_jax import models
from tests import helpers


def _random_statistics(variables, seed=0):
    """Variables whose BatchNorms are far from the identity: random scales, biases, statistics."""
    rng = np.random.default_rng(seed)

    def perturb(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "var" in name or "scale" in name:
            return jnp.asarray(rng.uniform(0.3, 3.0, leaf.shape), leaf.dtype)
        if "mean" in name or ("bias" in name and "classifier" not in jax.tree_util.keystr(path)):
            return jnp.asarray(rng.normal(0.0, 0.5, leaf.shape), leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.mark.parametrize("variant", ["tiny", "small"])
def test_folded_model_gives_the_trained_models_logits(variant):
    config = helpers.load_config("demo")
    config.model.variant = variant
    trained = models.create_model(config)
    mel = jax.random.normal(jax.random.key(1), (3, config.data.n_mels, config.data.num_frames))
    variables = _random_statistics(jax.jit(trained.init)(jax.random.key(0), mel))
    expected = jax.jit(lambda v, x: trained.apply(v, x, train=False))(variables, mel)

    serving = models.create_model(config, serving=True)
    folded = models.fold_batch_norm(variables)
    logits = jax.jit(serving.apply)(folded, mel)
    assert set(folded) == {"params"}
    # The logits spread over several units, so an unfolded BatchNorm would be far off.
    assert float(jnp.std(expected)) > 0.1
    chex.assert_trees_all_close(logits, expected, atol=2e-5, rtol=2e-5)
    # Exactly the serving model's parameter tree: a bias for every convolution, no BatchNorm.
    chex.assert_trees_all_equal_shapes(folded, jax.eval_shape(serving.init, jax.random.key(0), mel))


def test_folding_covers_every_batch_norm_of_w18():
    config = helpers.load_config("ravdess")
    mel = jax.ShapeDtypeStruct((1, config.data.n_mels, config.data.num_frames), jnp.float32)
    shapes = jax.eval_shape(models.create_model(config).init, jax.random.key(0), mel)
    trained = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), shapes)  # Folded on the host.
    serving = models.create_model(config, serving=True)
    folded = models.fold_batch_norm(trained)
    chex.assert_trees_all_equal_shapes(folded, jax.eval_shape(serving.init, jax.random.key(0), mel))
    norms = sum("mean" in jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(trained))
    biases = sum("bias" in jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(folded))
    assert biases == norms + 1  # And the classifier's.


def test_a_batch_norm_without_a_convolution_is_an_error():
    stats = {"mean": jnp.zeros(2), "var": jnp.ones(2)}
    variables = {
        "params": {"block": {"norm": {"scale": jnp.ones(2), "bias": jnp.zeros(2)}}},
        "batch_stats": {"block": {"norm": stats}},
    }
    with pytest.raises(ValueError, match=r"without a convolution before them under 'block/'"):
        models.fold_batch_norm(variables)


def test_a_folded_model_cannot_train():
    config = helpers.load_config("demo")
    config.model.variant = "tiny"
    serving = models.create_model(config, serving=True)
    mel = jnp.zeros((1, config.data.n_mels, config.data.num_frames))
    variables = jax.eval_shape(serving.init, jax.random.key(0), mel)  # Shapes: no compute.
    with pytest.raises(ValueError, match="cannot train"):
        jax.eval_shape(functools.partial(serving.apply, train=True), variables, mel)
