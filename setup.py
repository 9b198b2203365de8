"""Build roiops' C++/CUDA extension (roiops._C) with ninja.

Environment knobs:
  ROIOPS_CUDA      0: CPU only. 1: compile csrc/cuda/*.cu and fail loudly if that is not
                   possible. Unset: compile CUDA when a CUDA toolkit and a CUDA build of
                   torch are both present.
  ROIOPS_MARCH     value for -march= on x86-64 (default "native": the CPU kernels are
                   vectorized for the machine that builds them; use e.g. "x86-64-v3" for
                   a portable AVX2 build, or "" to pass no -march at all).
  TORCH_CUDA_ARCH_LIST  GPU architectures. When unset and no GPU can be queried: every
                   architecture CUDA 13 supports that PyTorch's wheels ship, with PTX of
                   the newest (DEFAULT_CUDA_ARCHS); CI sets one to stay fast.
  MAX_JOBS         parallel compile jobs (ninja).
"""

import glob
import os
import platform
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"

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


def extension():
    with_cuda = cuda_requested()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # The CPU emulation of the CUDA kernels (roiops_emulated ops) needs no nvcc.
    sources += sorted(glob.glob(os.path.join("csrc", "emulator", "*.cpp")))
    # -ffp-contract=off: no implicit FMA contraction, so the box geometry rounds exactly
    # as roiops.reference computes it (sample positions decide which pixels are read).
    # -fopenmp: at::parallel_for is header code that is only parallel when the
    # extension itself is compiled with OpenMP (torch's own build uses OpenMP).
    # -fno-tree-loop-distribute-patterns: keep the 64-channel copy/fill loops inline
    # instead of turning them into memcpy/memset calls (a third of roi_pool's time).
    cxx = ["-O3", "-std=c++20", "-fvisibility=hidden", "-ffp-contract=off", "-fopenmp",
           "-fno-tree-loop-distribute-patterns"]
    march = os.environ.get("ROIOPS_MARCH", "native")
    if march and platform.machine() in ("x86_64", "AMD64"):
        cxx.append(f"-march={march}")
    cxx.append("-DNDEBUG")
    if not with_cuda:
        return cpp_extension.CppExtension(
            "roiops._C", sources, extra_compile_args={"cxx": cxx}, include_dirs=[ROOT],
            extra_link_args=["-fopenmp"],
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
        extra_compile_args={"cxx": cxx + ["-DROIOPS_WITH_CUDA"], "nvcc": nvcc},
        include_dirs=[ROOT] + _wheel_cuda_includes(),
        extra_link_args=["-fopenmp"],
    )


# Metadata (name, version, dependencies, extras, license, URLs) is in pyproject.toml.
setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
