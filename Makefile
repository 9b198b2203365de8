# make demo: fresh venv, build, self-check against the reference, short CPU benchmark.
# make test: lint and the whole test suite (what .ci/run calls).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# ROIOPS_CUDA: unset = compile CUDA sources when a toolkit and a CUDA torch exist,
# 0 = CPU only (fast developer loop), 1 = CUDA required (see setup.py).
export ROIOPS_CUDA
export MAX_JOBS ?= 2

.PHONY: demo test build lint bench check-dist check-oldest-torch clean

demo: build
	$(PY) -m roiops check
	$(PY) -m roiops.bench --quick

test: build lint
	$(PY) -m pytest -q tests

# The venv is made once (its package list is in this file). The extension is built by
# `build` only, in place and incrementally (ninja, in build/); the venv finds the source
# tree through a .pth file instead of `pip install -e .`, which would compile it a second
# time in a build folder of its own.
$(VENV)/.ready: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 numpy pytest hypothesis pybind11 ninja ruff \
		build pycocotools matplotlib tqdm onnx onnxscript onnxruntime openvino
	$(PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/roiops-source.pth", "w").write(sys.argv[1])' $(CURDIR)
	touch $@

build: $(VENV)/.ready
	@PY=$(PY) scripts/build_ext.sh

lint: $(VENV)/.ready
	$(VENV)/bin/ruff check roiops tests benchmarks setup.py

bench: build
	$(PY) -m roiops.bench

# sdist -> pip wheel -> fresh venv -> python -m roiops check (slow: docs/testing.md).
check-dist: $(VENV)/.ready
	PY=$(PY) scripts/check_dist.sh

# The oldest supported torch: fresh venv from PyPI, CPU build, part of the suite (docs/testing.md).
check-oldest-torch:
	scripts/check_oldest_torch.sh

clean:
	rm -rf build roiops/*.so *.egg-info
