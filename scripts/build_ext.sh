#!/usr/bin/env bash
# In-place, incremental build of roiops._C (ninja keeps its state in build/). The
# compiler's command lines and warnings (torch's and CUDA's headers are noisy) go to
# build/build.log; the terminal gets one line per compiled file and a summary, or the
# log's last lines when the build fails.
#   PY=.venv/bin/python scripts/build_ext.sh     (the Makefile's `make build`)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
LOG=build/build.log
mkdir -p build
start=$SECONDS
echo "building roiops._C (compiler output: $LOG)"
# ninja prints "[i/n] <compiler command> ... -c <source> ..." per file: show "[i/n] <source>".
"$PY" setup.py build_ext --inplace 2>&1 | tee "$LOG" | awk '
    /^\[[0-9]+\/[0-9]+\]/ {
        src = ""
        for (i = 2; i < NF; i++) if ($i == "-c") src = $(i + 1)
        if (src != "") { n = split(src, part, "/"); print "  " $1 " " part[n - 1] "/" part[n]; fflush() }
    }'
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    tail -n 40 "$LOG"
    echo "build of roiops._C FAILED (exit $rc); the full log is $LOG"
    exit "$rc"
fi
if grep -q "ninja: no work to do" "$LOG"; then
    echo "roiops._C is up to date ($((SECONDS - start)) s)"
else
    echo "built roiops._C in $((SECONDS - start)) s"
fi
