"""The check that a member of a stacked program equals its run alone (tests of
emohrnet_jax.members)."""

import json
import os

import jax
import numpy as np
import pytest

from emohrnet_jax import checkpoints, steps

# float32 on CPU: XLA batches the vmapped convolutions (grouped) and reductions in another order
# than one model's, so the states agree to rounding, not bit for bit, and AdamW's division by
# near-zero gradients amplifies it: per element rtol 1e-5 fails (4e-4 seen on a 4e-3 weight after
# 8 steps). Each leaf's largest difference is bounded by TOLERANCE x the larger of the leaf's
# largest magnitude and the run's largest possible move (learning rate x steps); 8e-5 of it was
# seen at most, while another batch, key or schedule moves weights by that whole scale.
TOLERANCE = 1e-3


def _states(workdir, config, steps_per_epoch):
    """The run's latest and best states, restored."""
    like = steps.create_train_state(config, steps_per_epoch)
    manager = checkpoints.create_manager(str(workdir), 2)
    latest = checkpoints.restore_state(manager, manager.latest_step(), like)
    return latest, checkpoints.restore_best(str(workdir), like)[0]


def assert_same_run(a, b, config, steps_per_epoch):
    """Same parameters and statistics (to TOLERANCE), best epoch, scores and files."""
    for state_a, state_b in zip(
        _states(a, config, steps_per_epoch), _states(b, config, steps_per_epoch), strict=True
    ):
        leaves = jax.tree.leaves(jax.device_get((state_a.params, state_a.batch_stats)))
        other = jax.tree.leaves(jax.device_get((state_b.params, state_b.batch_stats)))
        move = config.learning_rate * int(state_b.step)
        for x, y in zip(leaves, other, strict=True):
            assert np.abs(x - y).max() <= TOLERANCE * max(np.abs(y).max(), move)
        assert int(state_a.step) == int(state_b.step)
    results = [json.loads((folder / "results.json").read_text()) for folder in (a, b)]
    assert results[0]["best_epoch"] == results[1]["best_epoch"]
    assert results[0]["best_step"] == results[1]["best_step"]
    for split in ("validation", "test"):
        assert results[0][split]["confusion_matrix"] == results[1][split]["confusion_matrix"]
        assert results[0][split]["loss"] == pytest.approx(results[1][split]["loss"], rel=1e-5)
    names = [sorted(p for p in os.listdir(f) if not p.startswith("events.")) for f in (a, b)]
    assert names[0] == names[1]
