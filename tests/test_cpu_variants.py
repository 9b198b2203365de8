"""One build runs on any x86-64 CPU: the CPU kernels are compiled once per instruction-set
level (roiops/_cpu.py), `import roiops` loads the one the CPU supports, every variant
computes the same bits, and no variant holds instructions its CPUs lack. Under qemu-user
the build runs as a Haswell (AVX2, no AVX-512) and a Sandy Bridge (AVX, no AVX2: torch's
own default level) would. CI installs qemu-user and sets ROIOPS_REQUIRE_QEMU=1, so
there the qemu checks cannot skip."""

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch
from cpu_variant_battery import assert_same_bits  # tests/, on sys.path under pytest

import roiops
from roiops import _cpu
from roiops.check import variants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATTERY = os.path.join(ROOT, "tests", "cpu_variant_battery.py")
X86 = platform.machine() in ("x86_64", "AMD64")
NATIVE_BUILD = "native" in _cpu.built()


def run_battery(path, capability=None, prefix=(), timeout=300):
    env = dict(os.environ)
    env.pop(_cpu.ENV, None)
    if capability is not None:
        env[_cpu.ENV] = capability
    subprocess.run([*prefix, sys.executable, BATTERY, str(path)], env=env, cwd=ROOT, check=True, timeout=timeout)
    return torch.load(path, weights_only=False)


def test_loads_the_variant_the_cpu_supports():
    if NATIVE_BUILD:
        assert _cpu.built() == ["native"] and roiops.cpu_capability == "native"
        return
    assert _cpu.built() == (list(_cpu.LEVELS) if X86 else ["default"])
    if not os.environ.get(_cpu.ENV):
        assert roiops.cpu_capability == _cpu.supported()
    assert _cpu.supported() == {"AVX512": "avx512", "AVX2": "avx2"}.get(torch.backends.cpu.get_cpu_capability(),
                                                                         "default")


def test_choice_rules():
    levels = list(_cpu.LEVELS)
    assert _cpu.choose(levels, None, "avx2") == "avx2"
    assert _cpu.choose(levels, None, "avx512") == "avx512"
    assert _cpu.choose(levels, "default", "avx512") == "default"
    assert _cpu.choose(["default"], None, "avx512") == "default"  # e.g. an aarch64 build
    assert _cpu.choose(["native"], None, "default") == "native"
    with pytest.raises(RuntimeError, match="ROIOPS_CPU_CAPABILITY=avx512, but this CPU supports up to avx2"):
        _cpu.choose(levels, "avx512", "avx2")
    with pytest.raises(RuntimeError, match="is not one of default, avx2, avx512"):
        _cpu.choose(levels, "sse4", "avx2")
    with pytest.raises(RuntimeError, match="built with ROIOPS_MARCH set"):
        _cpu.choose(["native"], "avx2", "avx2")
    with pytest.raises(ModuleNotFoundError):
        _cpu.choose([], None, "avx2")


def test_unsupported_request_fails_at_import_with_the_reason():
    env = dict(os.environ, **{_cpu.ENV: "sse4"})
    result = subprocess.run([sys.executable, "-c", "import roiops"], env=env, capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode != 0
    # A ROIOPS_MARCH build refuses any requested level, before looking at its name.
    reason = ("built with ROIOPS_MARCH set" if NATIVE_BUILD
              else "ROIOPS_CPU_CAPABILITY='sse4' is not one of default, avx2, avx512")
    assert reason in result.stderr


@pytest.mark.skipif(NATIVE_BUILD, reason="a ROIOPS_MARCH build has one variant")
def test_every_variant_this_cpu_runs_computes_the_same_bits(tmp_path):
    runnable = _cpu.LEVELS[: _cpu.LEVELS.index(_cpu.supported()) + 1]
    expected = run_battery(tmp_path / "default.pt", "default")
    assert expected["capability"] == "default"
    assert len(expected) == 1 + 3 * 2 * len(list(variants()))  # capability + op variants x dtypes x layouts
    for level in runnable[1:]:
        results = run_battery(tmp_path / f"{level}.pt", level)
        assert results["capability"] == level
        assert_same_bits(results, expected)


def instructions(path):
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    return subprocess.run([objdump, "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
                          check=True).stdout


def module_file(name):
    import importlib.util

    return importlib.util.find_spec(f"roiops.{name}").origin


@pytest.mark.skipif(not X86 or NATIVE_BUILD, reason="x86-64 builds with one module per level")
@pytest.mark.parametrize("name,allowed,required", [
    ("_C", (), ()),  # loaded on every CPU
    ("_cpu_default", (), ()),
    ("_cpu_avx2", ("ymm",), ("ymm",)),
    ("_cpu_avx512", ("ymm", "zmm"), ("zmm",)),
])
def test_no_module_holds_instructions_its_cpus_lack(name, allowed, required):
    code = instructions(module_file(name))
    registers = set(re.findall(r"%([yz]mm)\d+", code))
    assert registers <= set(allowed), f"roiops.{name} uses {sorted(registers - set(allowed))} registers"
    assert set(required) <= registers, f"roiops.{name} is not vectorized for its level"


QEMU_CPUS = [("Haswell", "avx2"), ("SandyBridge", "default")]


@pytest.mark.slow
@pytest.mark.skipif(not X86 or NATIVE_BUILD, reason="x86-64 builds with one module per level")
@pytest.mark.parametrize("cpu,level", QEMU_CPUS)
def test_runs_on_older_cpus_under_qemu(tmp_path, cpu, level):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        if os.environ.get("ROIOPS_REQUIRE_QEMU") == "1":
            pytest.fail("ROIOPS_REQUIRE_QEMU=1 but qemu-x86_64 is not installed (Debian: apt-get install qemu-user)")
        pytest.skip("qemu-x86_64 is not installed (Debian: apt-get install qemu-user)")
    expected = run_battery(tmp_path / "host.pt", "default")
    # Emulated, torch's import alone takes about a minute here.
    results = run_battery(tmp_path / f"{cpu}.pt", prefix=(qemu, "-cpu", cpu), timeout=1200)
    assert results["capability"] == level
    assert_same_bits(results, expected)
