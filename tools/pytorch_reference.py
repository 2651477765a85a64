"""Times the train step of our HRNet in JAX and of the same HRNet in PyTorch, in turns.

  pip install torch  # not a dependency of EmoHRNet-JAX; only this tool uses it
  python tools/pytorch_reference.py --config=configs/default.py \\
      --config.model.variant=w18_small_v2 --batch_size=8 [--jax_im2col=off]
  python tools/pytorch_reference.py --config=configs/ravdess.py --batch_size=64 \\
      --config.model.dtype=bfloat16 --device=cuda  # one GPU: JAX's default backend there

Prints the median train step of each framework, each timed in its own process in turns, and
their ratio (what is compared, and how: emohrnet_jax.pytorch_reference); `--json` writes the same
figures. The tool refuses to run when the PyTorch model differs from the JAX one in parameter
count or by more than 10% in the FLOPs of their convolutions and matmuls. JAX's process gets our
glibc malloc settings (`emohrnet_jax.allocator`, `--malloc_tunables`), as in training;
PyTorch's gets glibc's defaults, as its users have, unless `--torch_tunables`.
"""

from absl import app, flags
from ml_collections import config_flags

from emohrnet_jax import allocator, cli, pytorch_reference, storage

_MALLOC_TUNABLES = cli.define_malloc_tunables_flag()
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds of JAX and PyTorch steps.")
_PER_ROUND = flags.DEFINE_integer("per_round", 2, "Timed steps of each per round.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
_TORCH_TUNABLES = flags.DEFINE_bool(
    "torch_tunables", False, "Give PyTorch's process our GLIBC_TUNABLES too."
)
_DEVICE = flags.DEFINE_enum(
    "device", "cpu", ["cpu", "cuda"], "PyTorch's device; JAX's default backend must match."
)
_JAX_IM2COL = flags.DEFINE_list(
    "jax_im2col",
    [],
    "Also time JAX with config.model.im2col set to each of these (auto, on, off), each in its "
    "own process, in the same turns.",
)
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _MALLOC_TUNABLES.value:
        allocator.restart_with_tunables()
    config = _CONFIG.value
    try:
        results = pytorch_reference.compare(
            config,
            _BATCH_SIZE.value or config.batch_size,
            _ROUNDS.value,
            _PER_ROUND.value,
            _TORCH_TUNABLES.value,
            _DEVICE.value,
            tuple(_JAX_IM2COL.value),
        )
    except RuntimeError as error:
        cli.exit_with(error, "pytorch_reference")
    print(
        f"HRNet {results['variant']} ({results['parameters']:,} parameters, "
        f"{results['forward_gflops']:.2f} GFLOP forward), input {results['input_shape']}, "
        f"{results['dtype']} on {results.get('torch_device', results['device'])}"
    )
    print(
        f"train step median: JAX {results['jax_step_median_s'] * 1e3:.0f} ms, PyTorch "
        f"{results['torch']} ({results['torch_threads']} threads, channels-last) "
        f"{results['torch_step_median_s'] * 1e3:.0f} ms; JAX / PyTorch = "
        f"{results['jax_over_torch']:.2f}"
    )
    for im2col in _JAX_IM2COL.value:
        name = f"jax_im2col_{im2col}"
        print(
            f"  JAX with config.model.im2col={im2col}: {results[f'{name}_step_median_s'] * 1e3:.0f}"
            f" ms; JAX / PyTorch = {results[f'{name}_over_torch']:.2f}"
        )
    tunables = results["jax_glibc_tunables"], results["torch_glibc_tunables"]
    print("GLIBC_TUNABLES: JAX {}, PyTorch {}".format(*tunables))
    if _JSON.value:
        storage.write_json_atomically(_JSON.value, results)


if __name__ == "__main__":
    app.run(main)
