"""Loads the CPU kernels built for the running CPU.

setup.py compiles the CPU kernels once per x86-64 instruction-set level into modules
``roiops._cpu_default`` (baseline x86-64), ``roiops._cpu_avx2`` (AVX2, FMA, F16C) and
``roiops._cpu_avx512`` (AVX-512 F/BW/VL/DQ), as torch compiles its own kernels; other
architectures get ``_cpu_default`` only, and a build with ``ROIOPS_MARCH`` set gets a
single ``_cpu_native``. Importing one registers roiops' CPU kernels, so exactly one is
imported per process: the level torch reports for this CPU
(``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` lowers), or
the one ``ROIOPS_CPU_CAPABILITY`` names. Every variant computes the same bits (no fused
multiply-add anywhere, ``-ffp-contract=off``); only their speed differs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

# Lowest first: a CPU that supports one level supports those before it.
LEVELS = ("default", "avx2", "avx512")
ENV = "ROIOPS_CPU_CAPABILITY"


def built() -> list[str]:
    """The variants present in this installation."""
    return [name for name in (*LEVELS, "native") if importlib.util.find_spec(f"roiops._cpu_{name}") is not None]


def supported() -> str:
    """The highest level of LEVELS this CPU runs, as torch detects it."""
    level = torch.backends.cpu.get_cpu_capability().lower()
    return level if level in LEVELS else "default"


def choose(available: list[str], requested: str | None, cpu: str) -> str:
    """The variant to load: ``native`` when the build made only that one, else the
    requested level (which the CPU must support) or the CPU's, falling back to the
    highest level built below it."""
    if "native" in available:
        if requested:
            raise RuntimeError(f"{ENV}={requested}, but this roiops was built with ROIOPS_MARCH set: its CPU "
                               "kernels exist only as the one variant compiled for that -march")
        return "native"
    if requested:
        if requested not in LEVELS:
            raise RuntimeError(f"{ENV}={requested!r} is not one of {', '.join(LEVELS)}")
        if LEVELS.index(requested) > LEVELS.index(cpu):
            raise RuntimeError(f"{ENV}={requested}, but this CPU supports up to {cpu}")
        if requested not in available:
            raise RuntimeError(f"{ENV}={requested}, but this build has only {', '.join(available)}")
        return requested
    usable = [level for level in LEVELS[: LEVELS.index(cpu) + 1] if level in available]
    if not usable:
        # roiops/__init__.py turns this into the "not built" message.
        raise ModuleNotFoundError(f"No module named 'roiops._cpu_{cpu}'", name=f"roiops._cpu_{cpu}")
    return usable[-1]


def load() -> str:
    """Imports the chosen variant (registering the CPU kernels) and returns its name."""
    name = choose(built(), os.environ.get(ENV, "").strip().lower() or None, supported())
    importlib.import_module(f"roiops._cpu_{name}")
    return name
