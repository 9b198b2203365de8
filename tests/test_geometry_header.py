"""csrc/roi_geometry.h is the one statement of the geometry for every device: it must
compile in CUDA device code, so CPU-only code cannot creep into it."""

import os
import shutil
import subprocess

import pytest
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nvcc():
    home = cpp_extension.CUDA_HOME
    candidates = [os.path.join(home, "bin", "nvcc")] if home else []
    candidates += ["/usr/local/cuda/bin/nvcc", shutil.which("nvcc") or ""]
    return next((c for c in candidates if c and os.path.isfile(c)), None)


@pytest.mark.skipif(nvcc() is None, reason="no CUDA compiler on this machine")
def test_geometry_header_compiles_in_device_code(tmp_path):
    includes = [f"-I{p}" for p in [ROOT, *cpp_extension.include_paths()]]
    cmd = [nvcc(), "-std=c++17", "-arch=sm_90", *includes, "-c",
           os.path.join(ROOT, "tests", "cuda", "geometry_device.cu"), "-o", str(tmp_path / "geometry.o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
