#!/usr/bin/env bash
# In-place, incremental build of roiops' extension modules: roiops._C and the CPU
# kernel variants roiops._cpu_* (ninja keeps its state in build/). The
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
echo "building roiops' extension modules (compiler output: $LOG)"
# ninja prints "[i/n] <compiler command> ... -c <source> -o <object> ..." per file: show
# "[i/n] <source> (<module>)"; each module has its own object folder (setup.py).
"$PY" setup.py build_ext --inplace 2>&1 | tee "$LOG" | awk '
    /^\[[0-9]+\/[0-9]+\]/ {
        src = ""; module = ""
        for (i = 2; i < NF; i++) {
            if ($i == "-c") src = $(i + 1)
            if ($i == "-o" && match($(i + 1), /roiops\._[A-Za-z0-9_]+/)) module = substr($(i + 1), RSTART, RLENGTH)
        }
        if (src != "") { n = split(src, part, "/"); print "  " $1 " " part[n - 1] "/" part[n] " (" module ")"; fflush() }
    }'
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    tail -n 40 "$LOG"
    echo "build of roiops' extension modules FAILED (exit $rc); the full log is $LOG"
    exit "$rc"
fi
if ! grep -qE '^\[[0-9]+/[0-9]+\]' "$LOG"; then  # ninja compiled nothing
    echo "roiops' extension modules are up to date ($((SECONDS - start)) s)"
else
    echo "built roiops' extension modules in $((SECONDS - start)) s"
fi
