#!/usr/bin/env bash
# The GPU rows of docs/performance.md: tools/benchmark.py for w18 on RAVDESS-sized input
# (128 x 251) in several settings on one GPU, inside one short lease. Compiling dominates there (1-2 minutes per
# program), so every setting is first compiled at once in its own process (one step each; the
# programs and autotuning results go to the persistent cache), then timed alone, one after the
# other, loading its programs from the cache. Usage: tools/gpu_benchmarks.sh OUT_DIR
# (results: OUT_DIR/compile_NAME.json from the first pass, OUT_DIR/NAME.json from the second).
set -u
out=${1:?usage: tools/gpu_benchmarks.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/emohrnet_jax_xla}
common=(--config=configs/ravdess.py --noinput_pipeline --nopreprocessing --matmul_size=8192)
# name: flags; on GPU the default convolutions (config.model.im2col="auto") are cuDNN's.
declare -A settings=(
  [bf16_b64]="--config.model.dtype=bfloat16 --batch_size=64"
  [fp32_b64]="--config.model.dtype=float32 --batch_size=64"
  [bf16_b256]="--config.model.dtype=bfloat16 --batch_size=256"
  [bf16_b64_patches]="--config.model.dtype=bfloat16 --batch_size=64 --config.model.im2col=on"
)
order=(bf16_b64 fp32_b64 bf16_b256 bf16_b64_patches)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv

echo "== compiling ${order[*]} at once"
for name in "${order[@]}"; do
  # No preallocation: the processes share the GPU's memory while they compile and take a step.
  # shellcheck disable=SC2086
  XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "${COMPILE_TIMEOUT:-300}" "$python" \
    tools/benchmark.py "${common[@]}" ${settings[$name]} --steps=1 --warmup=0 \
    --json="$out/compile_$name.json" >"$out/compile_$name.log" 2>&1 &
done
wait
for name in "${order[@]}"; do
  echo "-- $name (compiled beside the others)"
  grep -E "^(compile|train step|peak|Traceback)|Error" "$out/compile_$name.log" | tail -5
done

echo "== timing each alone"
for name in "${order[@]}"; do
  echo "-- $name"
  # shellcheck disable=SC2086
  timeout "${TIME_TIMEOUT:-90}" "$python" tools/benchmark.py "${common[@]}" ${settings[$name]} \
    --steps=30 --warmup=5 --json="$out/$name.json" 2>&1 | grep -vE "^(I|W)[0-9]{4} "
done
