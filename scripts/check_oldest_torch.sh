#!/usr/bin/env bash
# The oldest supported torch (pyproject.toml, README: Install), as a user pinned to it
# meets roiops: a fresh venv with that torch and its torchvision from PyPI, roiops built
# against them in a copy of the source tree, and a representative part of the test
# suite there (ops against the reference, gradients, the fused multilevel ops,
# opcheck/compile/export, torchvision parity, autocast).
#
#   scripts/check_oldest_torch.sh            (make check-oldest-torch; .ci/run)
#   PYTHON=python3.11 scripts/check_oldest_torch.sh
#
# CPU kernels only, one variant (ROIOPS_MARCH=native): torch 2.4's wheels are built
# with CUDA 12.1, and its cpp_extension refuses to compile CUDA sources with another
# major CUDA version than its own, so the local CUDA 13 nvcc cannot compile them against
# it (CUDA 13 builds of torch start at 2.9); the main build compiles them against the
# newest torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH=2.4.1
TORCHVISION=0.19.1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/roiops-oldest.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
step() { echo "[check_oldest_torch $((SECONDS - start))s] $*"; }

step "venv: torch==$TORCH torchvision==$TORCHVISION from PyPI"
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
# setuptools >= 77 reads pyproject.toml's SPDX license (the venv's own is older).
"$PY" -m pip install -q "torch==$TORCH" "torchvision==$TORCHVISION" numpy pytest hypothesis ninja \
    "setuptools>=77"

step "build against torch $TORCH (CPU, ROIOPS_MARCH=native)"
# A copy of the tracked and new files: the tree's own build/ and roiops/*.so belong to
# the newest torch, and an extension only loads with the torch it was built with.
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$WORK/src"
cd "$WORK/src"
ROIOPS_CUDA=0 ROIOPS_MARCH=native MAX_JOBS="${MAX_JOBS:-2}" PY="$PY" scripts/build_ext.sh

step "tests against torch $TORCH"
"$PY" -c 'import roiops, torch; assert roiops.__file__.startswith("'"$WORK/src"'"); print("roiops on torch", torch.__version__)'
ROIOPS_HYPOTHESIS_EXAMPLES="${ROIOPS_HYPOTHESIS_EXAMPLES:-50}" "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_reference.py tests/test_gradcheck.py tests/test_multilevel.py tests/test_pt2.py \
    tests/test_torchvision.py tests/test_parity.py tests/test_autocast.py
step "done"
