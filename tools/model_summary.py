"""Prints the HRNet a config builds: per-stage branch shapes, parameter counts and FLOPs.

  python tools/model_summary.py --config=configs/demo.py
  python tools/model_summary.py --config=configs/iemocap.py --config.model.variant=w18_small_v2

Shapes and parameters come from tracing alone; FLOPs from XLA's cost analysis of the lowered
evaluation forward pass (multiply and add counted separately), per example.
"""

from typing import Any

from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import model_summary

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Batch size of the analysed forward pass.")
_FLOPS = flags.DEFINE_bool("flops", True, "Lower the forward pass to count its FLOPs.")
flags.mark_flags_as_required(["config"])


def _print(summary: dict[str, Any]) -> None:
    _, n_mels, n_frames = summary["input_shape"]
    print(f"HRNet {summary['variant']}: input {n_mels} Mel bands x {n_frames} frames")
    print("\nstage        branches (frequency x time x channels)")
    for name, branches in summary["stages"].items():
        print(f"{name:<12} " + "  ".join("x".join(map(str, shape)) for shape in branches))
    print("\nparameters")
    for group, count in summary["params"].items():
        print(f"{group:<12} {count:>12,}")
    print(f"{'total':<12} {summary['total_params']:>12,}")
    if "flops_per_example" in summary:
        print(f"\nforward FLOPs per example: {summary['flops_per_example'] / 1e9:.3f} G")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _print(model_summary.summarize(_CONFIG.value, _BATCH_SIZE.value, _FLOPS.value))


if __name__ == "__main__":
    app.run(main)
