"""Build roiops' C++/CUDA extension (roiops._C) with ninja.

Environment knobs:
  ROIOPS_CUDA      0: CPU only. 1: compile csrc/cuda/*.cu and fail loudly if that is not
                   possible. Unset: compile CUDA when a CUDA toolkit and a CUDA build of
                   torch are both present.
  ROIOPS_MARCH     unset (default): the CPU kernels are built once per x86-64 capability
                   (CPU_VARIANTS: baseline, AVX2, AVX-512), each into a module of its
                   own, and `import roiops` loads the one the running CPU supports, so
                   one build or wheel runs on any x86-64 CPU. Set (e.g. "native",
                   "x86-64-v3"): one variant, roiops._cpu_native, compiled with
                   -march=$ROIOPS_MARCH and loaded on every CPU (a build for the machine
                   it runs on). Other architectures build only the baseline.
  TORCH_CUDA_ARCH_LIST  GPU architectures. When unset and no GPU can be queried: every
                   architecture CUDA 13 supports that PyTorch's wheels ship, with PTX of
                   the newest (DEFAULT_CUDA_ARCHS); CI sets one to stay fast.
  MAX_JOBS         parallel compile jobs (ninja).
  ROIOPS_ASAN      1: build roiops._C alone (the op schemas and the emulated CUDA
                   kernels), CPU only (ROIOPS_CUDA=0), compiled and linked with
                   AddressSanitizer at -O1, so that the emulated kernels' out-of-bounds
                   reads and writes, which host memory does not fault on, are reported.
                   It loads only into a process started with libasan preloaded;
                   scripts/check_asan.sh builds it in a copy of the tree, beside the CPU
                   kernel modules of the in-place build.
"""

import glob
import os
import platform
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
# The CPU kernel variants of an x86-64 build and their flags: the capabilities torch
# dispatches its own kernels on (torch.backends.cpu.get_cpu_capability()), with the
# instruction sets its AVX2 and AVX512 levels require. roiops/_cpu.py picks one at
# import. Each variant is a whole extension module (kernels, op entry points and their
# CPU registration): only one is ever loaded, so no inline function compiled for one
# instruction set can be shared with code meant for another.
CPU_VARIANTS = {
    "default": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
}

# torch derives CUDA_HOME from `which nvcc` before it looks at /usr/local/cuda, so an
# nvcc wrapper in /usr/local/bin makes it look for the toolkit in /usr/local.
if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
    nvcc = shutil.which("nvcc")
    if os.path.isfile("/usr/local/cuda/bin/nvcc") and (
        nvcc is None or not os.path.isdir(os.path.join(os.path.dirname(nvcc), "..", "lib64"))
    ):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME at import)
except ModuleNotFoundError as missing:
    if missing.name != "torch":
        raise
    # Every install path ends here without torch (--no-build-isolation in an
    # environment without it, `python setup.py`, a build backend without build deps).
    sys.exit("roiops compiles against the installed torch, and torch is not installed: "
             "install torch first, then `pip install --no-build-isolation .`")


def cuda_requested() -> bool:
    flag = os.environ.get("ROIOPS_CUDA", "").strip()
    available = cpp_extension.CUDA_HOME is not None and _torch_has_cuda()
    if flag == "0":
        return False
    if flag == "1":
        if not available:
            raise RuntimeError(
                "ROIOPS_CUDA=1 but CUDA cannot be compiled here: "
                f"CUDA_HOME={cpp_extension.CUDA_HOME!r}, torch CUDA build: {_torch_has_cuda()}"
            )
        return True
    if flag:
        raise RuntimeError(f"ROIOPS_CUDA must be 0, 1 or unset, got {flag!r}")
    return available


def _torch_has_cuda() -> bool:
    import torch

    return torch.version.cuda is not None


def _wheel_cuda_includes() -> list[str]:
    # pip's CUDA torch ships the CUDA library headers (cuBLAS, cuSPARSE, ...) in
    # nvidia/cu*/include; a minimal toolkit lacks them but torch's headers include them.
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for base in nvidia.__path__:
        found += sorted(glob.glob(os.path.join(base, "cu*", "include")))
        found += sorted(glob.glob(os.path.join(base, "*", "include")))
    return list(dict.fromkeys(found))


# -ffp-contract=off: no implicit FMA contraction, so the box geometry rounds exactly as
# roiops.reference computes it (sample positions decide which pixels are read), and
# every CPU variant computes the same bits. -fopenmp: at::parallel_for is header code
# that is only parallel when the extension itself is compiled with OpenMP (torch's own
# build uses OpenMP). -fno-tree-loop-distribute-patterns: keep the 64-channel copy/fill
# loops inline instead of turning them into memcpy/memset calls (a third of roi_pool's
# time).
CXX = ["-O3", "-std=c++20", "-fvisibility=hidden", "-ffp-contract=off", "-fopenmp",
       "-fno-tree-loop-distribute-patterns", "-DNDEBUG"]
LINK = ["-fopenmp"]


def asan_requested() -> bool:
    flag = os.environ.get("ROIOPS_ASAN", "").strip()
    if flag not in ("", "0", "1"):
        raise RuntimeError(f"ROIOPS_ASAN must be 0, 1 or unset, got {flag!r}")
    if flag == "1" and os.environ.get("ROIOPS_CUDA", "").strip() != "0":
        raise RuntimeError("ROIOPS_ASAN=1 instruments host code only: build it with ROIOPS_CUDA=0")
    return flag == "1"


# AddressSanitizer: -O1 (its recommended level; the build takes about half as long as
# at -O3) after -O3 overrides it; frame pointers give whole stack traces in its reports.
ASAN = asan_requested()
if ASAN:
    CXX = CXX + ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1"]
    LINK = LINK + ["-fsanitize=address"]


def cpu_variants() -> dict[str, list[str]]:
    march = os.environ.get("ROIOPS_MARCH", "").strip()
    if march:
        return {"native": [f"-march={march}"]}
    if platform.machine() in ("x86_64", "AMD64"):
        return CPU_VARIANTS
    return {"default": []}


def cpu_extensions():
    """roiops._cpu_<variant>: the CPU kernels with their op registration, one module
    per instruction-set variant (csrc/cpu/module.cpp names it)."""
    sources = sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp"))) + [os.path.join("csrc", "op_common.cpp")]
    return [
        cpp_extension.CppExtension(
            f"roiops._cpu_{name}", sources, include_dirs=[ROOT], extra_link_args=LINK,
            extra_compile_args={"cxx": CXX + flags + [f"-DROIOPS_CPU_VARIANT={name}"]},
        )
        for name, flags in cpu_variants().items()
    ]


def core_extension():
    """roiops._C: the op schemas, the CPU emulation of the CUDA kernels (roiops_emulated
    ops; it needs no nvcc) and, when built with CUDA, the CUDA kernels. Compiled for
    the baseline instruction set: `import roiops` loads it on every CPU."""
    with_cuda = cuda_requested()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "emulator", "*.cpp")))
    if not with_cuda:
        return cpp_extension.CppExtension(
            "roiops._C", sources, extra_compile_args={"cxx": CXX}, include_dirs=[ROOT],
            extra_link_args=LINK,
        )
    if "TORCH_CUDA_ARCH_LIST" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    nvcc = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", "-DNDEBUG", "--fmad=false"]
    return cpp_extension.CUDAExtension(
        "roiops._C",
        sources,
        extra_compile_args={"cxx": CXX, "nvcc": nvcc},
        include_dirs=[ROOT] + _wheel_cuda_includes(),
        extra_link_args=["-fopenmp"],
    )


class BuildExtension(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    def build_extension(self, ext):
        # One object folder (and ninja file) per module: the CPU variants compile the
        # same sources with other flags, and must not overwrite each other's objects.
        base = self.build_temp
        self.build_temp = os.path.join(base, ext.name)
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base


# Metadata (name, version, dependencies, extras, license, URLs) is in pyproject.toml.
setup(
    # The CPU kernel modules take most of the build and hold no emulated kernel: an ASan
    # build leaves them out (scripts/check_asan.sh uses the in-place build's).
    ext_modules=[core_extension(), *([] if ASAN else cpu_extensions())],
    cmdclass={"build_ext": BuildExtension},
)
