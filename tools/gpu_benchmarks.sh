#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md: w18 on RAVDESS-sized input (64 x 128 x 251) in bfloat16 and
# float32, each with tools/benchmark.py and then PyTorch's step on the same GPU
# (tools/pytorch_reference.py, whose JAX side then loads the compiled step from the cache); a
# profile of the bfloat16 step. Usage: tools/gpu_benchmarks.sh OUT_DIR (results as JSON there).
set -u
out=${1:?usage: tools/gpu_benchmarks.sh OUT_DIR}
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/emohrnet_jax_xla}
common=(--config=configs/ravdess.py --batch_size=64)
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
for dtype in bfloat16 float32; do
  profile=()
  if [[ $dtype == bfloat16 ]]; then profile=(--profile_dir=/tmp/emohrnet_jax_profile); fi
  "$python" tools/benchmark.py "${common[@]}" --config.model.dtype=$dtype --steps=30 --warmup=5 \
    --matmul_size=8192 --noinput_pipeline --nopreprocessing "${profile[@]}" \
    --json="$out/benchmark_$dtype.json"
  if [[ ${#profile[@]} -gt 0 ]]; then
    # The trace (3 steps) beside the results; the larger .xplane.pb stays behind.
    find /tmp/emohrnet_jax_profile -name '*.trace.json.gz' -exec cp {} "$out/" \;
  fi
  "$python" tools/pytorch_reference.py "${common[@]}" --config.model.dtype=$dtype --device=cuda \
    --rounds=5 --per_round=4 --json="$out/pytorch_$dtype.json"
done
