#!/bin/bash
# The benchmarks that need no Tunix, on one NVIDIA GPU (the device tool's machine: jax CUDA, torch,
# transformers installed; ml_collections carried as a wheel in .whl/). Results go to $OUT (or ./gpu_out).
#   bash tools/gpu_benchmarks.sh
set -o pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
for dtype in float32 bfloat16; do
  for rows in 128 1024; do
    timeout 150 python3 tools/bench_train_step.py --platform cuda --dtype $dtype --rows $rows --repeats 5 \
      --peak_sizes 2048,4096,8192 2>&1 | grep -v "^W0000\|^I0000" | tee "$OUT/train_step_${dtype}_${rows}.txt"
  done
done
timeout 150 python3 tools/bench_sampler.py --platform cuda --hidden 512 --layers 8 --heads 8 --kv_heads 4 --mlp 2048 \
  --batch 128 --hf_threads= 2>&1 | grep -v "^W0000\|^I0000\|Writing" | tee "$OUT/sampler_512.txt"
