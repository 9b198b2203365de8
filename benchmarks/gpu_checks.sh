#!/usr/bin/env bash
# The device check: everything a lent GPU machine is for, sized to its limits (one
# command at most 10 minutes, at most 8 files back from $OUT). Steps, in order:
#   probe     versions, GPU, whether compute-sanitizer accepts this device (a tiny run)
#   build     roiops._C with CUDA for this card's architecture and one CPU module
#             (ROIOPS_MARCH=native), against the torch that is here; then an import check
#   smoke     each op's forward and backward on the GPU once, against the CPU
#   tests     tests/test_cuda.py but its detection-size parity
#   parity    tests/test_cuda.py's detection-size parity (C = 256, 1024 RoIs, FPN levels;
#             forward, input and box gradients, JVP; every op, mode, dtype and layout)
#   memcheck  compute-sanitizer memcheck over benchmarks/sanitize_cuda.py --subset
#   timings   benchmarks/bench_cuda.py --fpn --profile: the fused FPN pooler against
#             torchvision with CUDA events, and the profiler's split of its backward
# Each step runs under `timeout` with its own budget, and every step runs whatever the
# others did. A whole-run deadline (GPU_CHECKS_SECONDS, default 560) keeps the summary
# inside a 10-minute command: a step that no longer fits is skipped and the summary
# prints the command that runs what is left (the build stays while the machine is warm).
# Without a GPU the GPU steps print "skipped: no GPU" and the run passes when the others do.
#
#   OUT=dir bash benchmarks/gpu_checks.sh [STEPS]    STEPS: comma-separated, default all
# On the lent machine: one call with the run tool's timeout_s 600, `OUT=$OUT bash
# benchmarks/gpu_checks.sh`, then, only if the summary says so, the rerun line it prints.
# Environment: PYTHON (default python3), OUT (default gpu-results, relative to the
#   repository root), GPU_CHECKS_SECONDS, GPU_CHECKS_SKIP_BUILD=1 (keep roiops/*.so when
#   they exist), GPU_CHECKS_BUILD_SECONDS (the build's budget, default 330: a cold build
#   takes far longer on 2 cores), TORCH_CUDA_ARCH_LIST (default: the GPU's, or 9.0
#   without one), MAX_JOBS (default: every core).
# Files in $OUT (8): summary.txt, probe.log, build.log, tests.log (smoke and tests),
#   parity.log, memcheck.log, timings.log, timings.md. Exit status: 0 when every step that
#   ran passed, 1 when one failed or timed out, 2 when none failed but one had no time.
set -uo pipefail
cd "$(dirname "$0")/.."
export PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
# The toolkit's own folders, in case nvcc and compute-sanitizer are not on PATH there.
for dir in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
    [ -d "$dir" ] && PATH="$PATH:$dir"
done
export PATH
ALL_STEPS=(probe build smoke tests parity memcheck timings)
REQUESTED="${1:-all}"
[ "$REQUESTED" = all ] && REQUESTED="$(IFS=,; echo "${ALL_STEPS[*]}")"
for s in ${REQUESTED//,/ }; do
    if [[ " ${ALL_STEPS[*]} " != *" $s "* ]]; then
        echo "gpu_checks.sh: unknown step '$s' (steps: ${ALL_STEPS[*]})"
        exit 64
    fi
done
export OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DEADLINE=$((SECONDS + ${GPU_CHECKS_SECONDS:-560}))
SUMMARY="$OUT/summary.txt"
ROWS=()
LEFT=()
FAILED=0
NO_TIME=0
HAVE_GPU=0
SANITIZER=0
DEVICE="not probed yet"

# Budgets in seconds, each a timeout: about twice what the step is expected to take on
# the H200 machine (16 cores), the build's on a cold ninja cache.
declare -A BUDGET=([probe]=60 [build]=${GPU_CHECKS_BUILD_SECONDS:-330} [smoke]=60 [tests]=150 [parity]=120
                   [memcheck]=150 [timings]=150)
declare -A LOG=([probe]=probe.log [build]=build.log [smoke]=tests.log [tests]=tests.log [parity]=parity.log
                [memcheck]=memcheck.log [timings]=timings.log)

write_summary() {
    {
        echo "roiops gpu_checks.sh $REQUESTED: $DEVICE; compute-sanitizer: $([ "$SANITIZER" = 1 ] && echo usable \
            || echo "not used")"
        printf '%-9s %-44s %7s %7s\n' step status seconds budget
        for row in "${ROWS[@]}"; do echo "$row"; done
        if [ "$FAILED" -gt 0 ]; then echo "result: FAIL"
        elif [ "$NO_TIME" -gt 0 ]; then echo "result: INCOMPLETE (no failure; steps left for lack of time)"
        else echo "result: PASS"; fi
        if [ "${#LEFT[@]}" -gt 0 ]; then
            echo "to run what is left: bash benchmarks/gpu_checks.sh $(IFS=,; echo "${LEFT[*]}")"
        fi
        echo "logs: $OUT"
    } > "$SUMMARY"
}

record() {  # step status seconds
    ROWS+=("$(printf '%-9s %-44s %7s %7s' "$1" "$2" "$3" "${BUDGET[$1]}")")
    write_summary
}

# run_step STEP KIND FUNCTION: KIND is gpu (skipped without a GPU) or cpu.
run_step() {
    local step=$1 kind=$2 fn=$3 log="$OUT/${LOG[$1]}"
    if [ "$step" != probe ] && [[ ",$REQUESTED," != *",$step,"* ]]; then return; fi
    if [ "$kind" = gpu ] && [ "$HAVE_GPU" != 1 ]; then
        echo "== $step: skipped: no GPU"
        record "$step" "skipped: no GPU" 0
        return
    fi
    local limit=$((DEADLINE - SECONDS - 5))
    [ "$limit" -gt "${BUDGET[$step]}" ] && limit=${BUDGET[$step]}
    if [ "$limit" -lt 15 ]; then
        echo "== $step: skipped: out of time"
        record "$step" "skipped: out of time" 0
        LEFT+=("$step")
        NO_TIME=$((NO_TIME + 1))
        return
    fi
    echo "== $step (timeout ${limit} s, log ${LOG[$step]})"
    echo "===== $step $(date -u +%FT%TZ)" >> "$log"
    local start=$SECONDS rc
    timeout --kill-after=5 "$limit" bash -c "$fn" >> "$log" 2>&1
    rc=$?
    local took=$((SECONDS - start)) status
    if [ "$rc" -eq 0 ]; then status=ok
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="TIMEOUT after ${limit} s"; FAILED=$((FAILED + 1))
    else status="FAIL (exit $rc)"; FAILED=$((FAILED + 1)); fi
    if [ "$rc" -ne 0 ]; then
        echo "---- last lines of ${LOG[$step]}:"
        tail -n 15 "$log"
    fi
    record "$step" "$status" "$took"
}

probe() {
    date -u
    uname -a
    echo "cores: $(nproc)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    "$PY" - <<'EOF'
import platform
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
try:
    import torchvision
    print("torchvision", torchvision.__version__)
except Exception as error:  # reported, not fatal: only the timings compare with it
    print("torchvision does not import:", error)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu {torch.cuda.get_device_name(0)}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
          f"L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB, {p.total_memory / 2**30:.0f} GiB, "
          f"{torch.cuda.device_count()} device(s)")
else:
    print("gpu: none (torch.cuda.is_available() is False)")
EOF
}

# compute-sanitizer refuses the device on one of the machine's runtimes: a tiny CUDA
# program under memcheck tells which, in seconds, before the real run is planned on it.
sanitizer_probe() {
    local dir
    dir=$(mktemp -d)
    cat > "$dir/probe.cu" <<'EOF'
#include <cstdio>
__global__ void fill(int* p) { p[threadIdx.x] = int(threadIdx.x); }
int main() {
  int* p = nullptr;
  if (cudaMalloc(&p, 32 * sizeof(int)) != cudaSuccess) return 2;
  fill<<<1, 32>>>(p);
  if (cudaDeviceSynchronize() != cudaSuccess) return 3;
  cudaFree(p);
  std::puts("probe kernel ran");
  return 0;
}
EOF
    timeout 90 nvcc -arch="sm_${ARCH/./}" -o "$dir/probe" "$dir/probe.cu" &&
        timeout 60 compute-sanitizer --tool memcheck --error-exitcode 1 "$dir/probe" > "$dir/out.txt" 2>&1
    local rc=$?
    cat "$dir/out.txt" 2>/dev/null
    rm -rf "$dir"
    return $rc
}

build() {
    if [ "${GPU_CHECKS_SKIP_BUILD:-0}" = 1 ] && ls roiops/_C*.so >/dev/null 2>&1; then
        echo "GPU_CHECKS_SKIP_BUILD=1: keeping $(ls roiops/*.so | tr '\n' ' ')"
    else
        ROIOPS_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" ROIOPS_MARCH="${ROIOPS_MARCH:-native}" \
            MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" setup.py build_ext --inplace || return
    fi
    # The module must import against this torch and hold the CUDA kernels (a build
    # without them would make every GPU step fail for another reason).
    "$PY" -c '
import torch, roiops
cuda = torch._C._dispatch_has_kernel_for_dispatch_key("roiops::roi_align", "CUDA")
print("import: roiops", roiops.__version__, "| CPU kernels", roiops.cpu_capability, "| CUDA kernels", cuda)
raise SystemExit(0 if cuda else "roiops was built without its CUDA kernels")'
}

smoke() {
    "$PY" - <<'EOF'
import torch
import roiops
x = torch.randn(2, 16, 24, 32, dtype=torch.float64)
rois = torch.tensor([[0, 1.5, 2.0, 20.0, 14.0], [1, -8.0, -3.0, 40.0, 50.0], [0, 9.0, 4.0, 3.0, 2.0]],
                    dtype=torch.float64)
for op in ("roi_align", "roi_warp", "roi_pool"):
    results = []
    for device in ("cpu", "cuda"):
        xd, rd = x.to(device).requires_grad_(), rois.to(device).requires_grad_()
        out = getattr(roiops, op)(xd, rd, 3, 0.5)
        grads = torch.autograd.grad(out, (xd, rd), torch.ones_like(out), allow_unused=True)
        results.append([t.cpu() for t in (out, *grads) if t is not None])
    torch.cuda.synchronize()
    for cpu, gpu in zip(*results, strict=True):
        torch.testing.assert_close(gpu, cpu)
    print(f"smoke: {op} forward and backward on {torch.cuda.get_device_name()} match the CPU")
EOF
}

tests() {
    "$PY" -m pytest -q -p no:cacheprovider -rs --durations=8 tests/test_cuda.py -k "not detection"
}

parity() {
    "$PY" -m pytest -q -p no:cacheprovider -s tests/test_cuda.py -k detection
}

memcheck() {
    # Without the caching allocator each tensor is its own allocation, so memcheck sees
    # an access past a tensor's end rather than inside a cached block.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 --print-limit 20 \
        "$PY" benchmarks/sanitize_cuda.py --subset
}

timings() {
    "$PY" benchmarks/bench_cuda.py --fpn --profile --save "$OUT/timings.md"
}

export -f probe sanitizer_probe build smoke tests parity memcheck timings

echo "roiops device check: steps $REQUESTED, results in $OUT"
# The probe always runs: the other steps need to know whether there is a GPU.
run_step probe cpu probe
# One python start for what the shell needs: torch's version, whether a GPU is usable,
# its compute capability and name.
mapfile -t FOUND < <("$PY" -c '
import torch
print(torch.__version__)
if torch.cuda.is_available():
    print("%d.%d" % torch.cuda.get_device_capability(0))
    print(torch.cuda.get_device_name(0))' 2>/dev/null)
TORCH_VERSION="${FOUND[0]:-not importable}"
DEVICE="no GPU, torch $TORCH_VERSION"
if [ "${#FOUND[@]}" -ge 3 ]; then
    HAVE_GPU=1
    DEVICE="${FOUND[2]}, torch $TORCH_VERSION"
    ARCH="${TORCH_CUDA_ARCH_LIST:-${FOUND[1]}}"
    if [[ ",$REQUESTED," == *",memcheck,"* ]]; then
        if command -v compute-sanitizer >/dev/null && sanitizer_probe >> "$OUT/probe.log" 2>&1; then
            SANITIZER=1
        fi
        echo "compute-sanitizer probe: $([ "$SANITIZER" = 1 ] && echo usable || echo refused or missing)" \
            | tee -a "$OUT/probe.log"
    fi
else
    ARCH="${TORCH_CUDA_ARCH_LIST:-9.0}"
fi
export ARCH
write_summary

run_step build cpu build
run_step smoke gpu smoke
run_step tests gpu tests
run_step parity gpu parity
if [ "$HAVE_GPU" = 1 ] && [ "$SANITIZER" != 1 ] && [[ ",$REQUESTED," == *",memcheck,"* ]]; then
    echo "== memcheck: skipped: compute-sanitizer refuses this device (probe.log)"
    record memcheck "skipped: sanitizer refuses this device" 0
else
    run_step memcheck gpu memcheck
fi
run_step timings gpu timings

echo
cat "$SUMMARY"
[ "$FAILED" -gt 0 ] && exit 1
[ "$NO_TIME" -gt 0 ] && exit 2
exit 0
