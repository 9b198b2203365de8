#!/usr/bin/env bash
# Everything a lent GPU is for, in one command (the device tool's machine: its python3
# holds a CUDA torch; results land in $OUT, default ./gpu-results):
#   build with CUDA for this card, the CUDA and emulated test suites, compute-sanitizer
#   memcheck and racecheck on every op, the GPU checks against torchvision (bench_cuda.py:
#   float16, bitwise stability, box-gradient cost) and python -m roiops.bench --device cuda.
set -uo pipefail
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/device.txt" 2>&1
ROIOPS_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="$(nproc)" \
  "$PY" setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
"$PY" -m pytest -q -x tests/test_cuda.py tests/test_cuda_emulated.py -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -15
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 1 "$PY" benchmarks/sanitize_cuda.py \
    > "$OUT/sanitizer-$tool.log" 2>&1; echo "compute-sanitizer $tool: rc=$?"; tail -3 "$OUT/sanitizer-$tool.log"
done
"$PY" benchmarks/bench_cuda.py --save "$OUT/cuda-checks.md" 2>&1 | tail -40
"$PY" -m roiops.bench --device cuda --no-progress --out "$OUT" 2>&1 | tail -60
