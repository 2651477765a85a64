"""The HRNet a config builds: per-stage branch shapes, parameter counts and FLOPs.

Shapes and parameters come from tracing alone; FLOPs from XLA's cost analysis of the lowered
evaluation forward pass (multiply and add counted separately), per example.
`tools/model_summary.py` prints it.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

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
