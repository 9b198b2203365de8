# make demo: fresh venv, build, self-check against the reference, short CPU benchmark.
# make test: lint and the whole test suite (what .ci/run calls).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# ROIOPS_CUDA: unset = compile CUDA sources when a toolkit and a CUDA torch exist,
# 0 = CPU only (fast developer loop), 1 = CUDA required (see setup.py).
export ROIOPS_CUDA
export MAX_JOBS ?= 2

.PHONY: demo test build lint bench clean

demo: build
	$(PY) -m roiops check
	$(PY) benchmarks/bench_cpu.py --quick

test: build lint
	$(PY) -m pytest -q tests

# The venv is made once; the extension is rebuilt incrementally (ninja) every time.
$(VENV)/.ready: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 numpy pytest hypothesis pybind11 ninja ruff \
		pycocotools matplotlib tqdm
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(VENV)/.ready
	$(PY) setup.py -q build_ext --inplace

lint: $(VENV)/.ready
	$(VENV)/bin/ruff check roiops tests benchmarks setup.py

bench: build
	$(PY) benchmarks/bench_cpu.py

clean:
	rm -rf build roiops/*.so *.egg-info
