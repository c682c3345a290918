#!/usr/bin/env bash
# bench_vs_upstream.py at the study's sizes on the lent GPU, in ONE device call of about 5 minutes:
#
#   (here, once)  bash benchmarks/gpu_wheels.sh /work/main/.venv/bin/python
#   (device run)  command: bash benchmarks/run_on_gpu.sh   carry: [".whl"]   timeout_s: 540
#
# Installs only the carried wheels (no network there), prints the GPU, runs the benchmark on 8
# images of 1024 px (median of 3 passes) and leaves results.md, results.json and the log under $OUT.
# BENCH_ARGS adds options, e.g. BENCH_ARGS="--compile" (compile time is reported as the first call).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench_vs_upstream}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
VOCAB=()
[ -f .whl/vocab/vocab.txt ] && VOCAB=(--vocab .whl/vocab)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout 480 python3 benchmarks/bench_vs_upstream.py --device cuda --size 1024 --n-images 8 --warmup 2 --repeats 3 \
  --batch-size 8 --precision bf16 --attention sdpa --gdino-precision bf16 "${VOCAB[@]}" \
  --compile-cache /tmp/fmtest_cache/torchinductor --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/log.txt"
