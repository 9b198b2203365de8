#!/usr/bin/env bash
# The emulated CUDA kernels under AddressSanitizer: host memory does not fault where
# device memory would, so an out-of-bounds read in a kernel passes the emulated tests
# silently; ASan reports it. Builds a CPU-only, ASan-instrumented roiops._C (setup.py's
# ROIOPS_ASAN=1) in build/asan, a copy of the tree, so the in-place build is left alone;
# the CPU kernels the emulated ones are compared with are the in-place build's modules
# (not instrumented: they take most of a build and hold no emulated kernel), so build in
# place first (make build). Then runs tests/test_cuda_emulated.py,
# test_emulator_alignment.py and test_bad_input.py there with libasan preloaded into
# python (which is not instrumented) and a small hypothesis profile.
#   PY=.venv/bin/python scripts/check_asan.sh      (.ci/run runs it after `make test`)
# Environment: PY, MAX_JOBS (default 2), ROIOPS_HYPOTHESIS_EXAMPLES (default 60).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PY="${PY:-.venv/bin/python}"
# An absolute path, since the tests run in the copy; the interpreter's own symlink is not
# resolved, which would lose its virtual environment.
case "$PY" in
    */*) PY="$(cd "$(dirname "$PY")" 2>/dev/null && pwd)/$(basename "$PY")" ;;
    *) PY="$(command -v "$PY")" ;;
esac
[ -x "$PY" ] || { echo "check_asan: no python at $PY (set PY)"; exit 2; }
TREE="$ROOT/build/asan"
start=$SECONDS
LIBASAN="$(${CXX:-g++} -print-file-name=libasan.so)"
LIBSTDCXX="$(${CXX:-g++} -print-file-name=libstdc++.so)"
[ -f "$LIBASAN" ] || { echo "check_asan: no libasan.so next to ${CXX:-g++} ($LIBASAN)"; exit 2; }

# The tree as git sees it (tracked and untracked-not-ignored files, so uncommitted work
# is checked too); tar keeps modification times, so ninja rebuilds only what changed.
mkdir -p "$TREE/roiops"
if ! ls roiops/_cpu_*.so >/dev/null 2>&1; then
    echo "check_asan: no CPU kernel module in roiops/: build in place first (make build)"
    exit 2
fi
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$TREE" || exit 2
rm -f "$TREE"/roiops/_cpu_*.so
cp -p roiops/_cpu_*.so "$TREE/roiops/" || exit 2
echo "check_asan: building an ASan copy of roiops in $TREE (log: $TREE/build.log)"
(cd "$TREE" && ROIOPS_ASAN=1 ROIOPS_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    "$PY" setup.py build_ext --inplace > build.log 2>&1)
rc=$?
if [ "$rc" -ne 0 ]; then
    tail -n 30 "$TREE/build.log"
    echo "check_asan: build FAILED (exit $rc) after $((SECONDS - start)) s"
    exit "$rc"
fi
echo "check_asan: built in $((SECONDS - start)) s; running the emulated and bad-input tests under ASan"
test_start=$SECONDS
# libstdc++ is preloaded after libasan because python does not link it: ASan's
# interceptor of __cxa_throw finds the real one only if it is loaded at start (else every
# C++ exception, e.g. a bad-input ValueError, aborts). detect_leaks=0: python and torch
# keep allocations to exit, which LeakSanitizer would report; abort_on_error gives a
# failing exit code even if an error is reported from a thread pytest does not watch;
# log_path: pytest captures the tests' stderr, which an abort would lose with the report.
REPORT="$TREE/asan-report"
rm -f "$REPORT".*
(cd "$TREE" && LD_PRELOAD="$LIBASAN $LIBSTDCXX" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$REPORT" \
    PYTHONPATH="$TREE" \
    ROIOPS_HYPOTHESIS_EXAMPLES="${ROIOPS_HYPOTHESIS_EXAMPLES:-60}" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_emulated.py tests/test_emulator_alignment.py \
        tests/test_bad_input.py)
rc=$?
for report in "$REPORT".*; do
    [ -f "$report" ] || continue
    echo "check_asan: AddressSanitizer reported ($report):"
    grep -v '^    #[1-9][0-9]' "$report" | head -n 60
    [ "$rc" -eq 0 ] && rc=1
done
echo "check_asan: tests $([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - test_start)) s;" \
    "$((SECONDS - start)) s in all"
exit "$rc"
