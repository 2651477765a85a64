"""Tests of tools/model_summary.py (emohrnet_jax.model_summary)."""

import pytest

from emohrnet_jax import model_summary
from tests import helpers


@pytest.mark.slow
def test_summary_lists_stages_in_order_with_parameters_and_flops():
    config = helpers.load_config("demo")
    config.model.variant = "tiny"
    summary = model_summary.summarize(config, batch_size=2, flops=True)
    assert list(summary["stages"]) == ["stem", "stage1", "stage2", "stage3", "stage4", "fuse"]
    assert summary["stages"]["stage4"] == [(16, 32, 4), (8, 16, 8), (4, 8, 16), (2, 4, 32)]
    assert summary["total_params"] == 60_524
    assert list(summary["params"])[:3] == ["stem0", "stem1", "stage1"]

    config.data.num_frames *= 2
    doubled = model_summary.summarize(config, batch_size=2, flops=True)
    # Convolutions dominate, so FLOPs grow in proportion to the number of frames.
    assert doubled["flops_per_example"] == pytest.approx(2 * summary["flops_per_example"], rel=0.1)
