"""Prints the HRNet a config builds: per-stage branch shapes, parameter counts and FLOPs.

  python tools/model_summary.py --config=configs/demo.py
  python tools/model_summary.py --config=configs/iemocap.py --config.model.variant=w18_small_v2

Shapes and parameters come from tracing alone; FLOPs from XLA's cost analysis of the lowered
evaluation forward pass (multiply and add counted separately), per example.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import cost, models


def summarize(config: ml_collections.ConfigDict, batch_size: int, flops: bool) -> dict[str, Any]:
    """Returns the model's input shape, branch shapes per stage, parameter counts and FLOPs."""
    model = models.create_model(config)
    shape = (batch_size, config.data.n_mels, config.data.num_frames)
    mel = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), mel)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, mel
    )
    stages = {}
    for name, (value,) in state["intermediates"].items():
        branches = value if isinstance(value, tuple) else (value,)
        stages[name] = [tuple(b.shape[1:]) for b in branches]
    stages = dict(sorted(stages.items(), key=lambda item: _order(item[0])))

    params: dict[str, int] = {}
    for name, subtree in variables["params"].items():
        group = name.split("_")[0]
        params[group] = params.get(group, 0) + sum(p.size for p in jax.tree.leaves(subtree))
    params = dict(sorted(params.items(), key=lambda item: _order(item[0])))
    summary = {
        "variant": config.model.variant,
        "input_shape": mel.shape,
        "stages": stages,
        "params": params,
        "total_params": sum(params.values()),
    }
    if flops:
        forward = jax.jit(lambda v, x: model.apply(v, x))
        lowered = forward.lower(variables, mel)
        summary["flops_per_example"] = cost.flops(lowered, forward, variables, mel) / batch_size
    return summary


_DATA_FLOW = ("stem", "stage1", "transition1", "stage2", "transition2", "stage3", "transition3")
_DATA_FLOW += ("stage4", "fuse", "classifier")


def _order(name: str) -> tuple[int, str]:
    """Sorts stem0, stem1, stage1, transition1, ..., fuse, classifier in data-flow order."""
    base = "stem" if name.startswith("stem") else name
    return (_DATA_FLOW.index(base) if base in _DATA_FLOW else len(_DATA_FLOW), name)


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
    _print(summarize(_CONFIG.value, _BATCH_SIZE.value, _FLOPS.value))


if __name__ == "__main__":
    # Flags are defined only when run as a script, so tests can import this module.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    _BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Batch size of the analysed forward pass.")
    _FLOPS = flags.DEFINE_bool("flops", True, "Lower the forward pass to count its FLOPs.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
