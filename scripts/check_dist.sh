#!/usr/bin/env bash
# Packaging check, as a user would install roiops: build an sdist, build a wheel from
# that sdist with `pip wheel` (so the sdist is proven to hold everything the compile
# needs), install the wheel into a fresh venv (which downloads torch from PyPI) and run
# `python -m roiops --version` and `python -m roiops check` there, outside the source
# tree. Slow: one compile of the CPU extension plus a torch download (docs/testing.md).
#
#   scripts/check_dist.sh            uses .venv (made by `make build`) to build
#   PY=/path/to/python scripts/check_dist.sh
#
# The build uses the builder's torch (--no-build-isolation) and the fresh venv gets the
# same torch version, because the extension only loads with the torch it was built with.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PY="${PY:-.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/roiops-dist.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# CPU kernels only: the check runs on the CPU, and compiling the CUDA sources is the
# main build's job (CI compiles them there); this keeps the check to one CPU compile.
export ROIOPS_CUDA=0
start=$SECONDS
step() { echo "[check_dist $((SECONDS - start))s] $*"; }

step "sdist"
"$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 \
    || { tail -n 40 "$WORK/sdist.log"; exit 1; }
sdist=("$WORK"/dist/roiops-*.tar.gz)
# (listings go to files: `grep -q` in a pipe would end it early and pipefail fail it)
tar -tzf "${sdist[0]}" >"$WORK/sdist.txt"
grep -q "csrc/roi_geometry.h" "$WORK/sdist.txt" || { echo "sdist lacks the csrc headers"; exit 1; }

step "pip wheel from the sdist (compiles the extension)"
"$PY" -m pip wheel --no-build-isolation --no-deps -w "$WORK/dist" "${sdist[0]}" >"$WORK/wheel.log" 2>&1 \
    || { tail -n 40 "$WORK/wheel.log"; exit 1; }
wheel=("$WORK"/dist/roiops-*.whl)
"$PY" -m zipfile -l "${wheel[0]}" >"$WORK/wheel.txt"
members=(roiops/py.typed roiops/_C LICENSE roiops/_cpu_default)
[ "$(uname -m)" = x86_64 ] && members+=(roiops/_cpu_avx2 roiops/_cpu_avx512)
for member in "${members[@]}"; do
    grep -q "$member" "$WORK/wheel.txt" || { echo "wheel lacks $member"; exit 1; }
done

torch_version="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
step "fresh venv: pip install torch==$torch_version and the wheel"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "torch==$torch_version" "${wheel[0]}"

step "python -m roiops check in the fresh venv"
cd "$WORK"
"$WORK/venv/bin/python" -m roiops --version
"$WORK/venv/bin/python" -m roiops check --problems 3

# The wheel on a CPU without AVX2 (torch's own default level), where a -march=native
# wheel dies with "Illegal instruction": the same bits as the baseline variant here.
if [ "$(uname -m)" = x86_64 ] && command -v qemu-x86_64 >/dev/null; then
    step "the wheel under qemu-x86_64 -cpu SandyBridge (emulated: a few minutes)"
    battery="$ROOT/tests/cpu_variant_battery.py"
    ROIOPS_CPU_CAPABILITY=default "$WORK/venv/bin/python" "$battery" "$WORK/host.pt"
    qemu-x86_64 -cpu SandyBridge "$WORK/venv/bin/python" "$battery" "$WORK/sandybridge.pt" 2>"$WORK/qemu.log" \
        || { tail -n 20 "$WORK/qemu.log"; exit 1; }
    "$WORK/venv/bin/python" "$battery" --compare "$WORK/sandybridge.pt" "$WORK/host.pt" default
elif [ "${ROIOPS_REQUIRE_QEMU:-0}" = 1 ]; then
    echo "ROIOPS_REQUIRE_QEMU=1 but qemu-x86_64 is not installed"; exit 1
fi
step "done"
