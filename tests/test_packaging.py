"""Packaging: one version, the metadata pyproject.toml declares, and the sentence every
install path ends with when torch is missing. (scripts/check_dist.sh builds and installs
the sdist and wheel in a fresh venv; it is too slow for the test suite.)"""

import os
import subprocess
import sys

import pytest

import roiops

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_one_version():
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "roiops._version.__version__"}
    from roiops._version import __version__

    assert roiops.__version__ == __version__


def test_metadata():
    project = pyproject()["project"]
    assert project["license"] == "BSD-3-Clause" and os.path.isfile(os.path.join(ROOT, "LICENSE"))
    assert project["readme"] == "README.md"
    assert [d for d in project["dependencies"] if d.startswith("torch>=")] == project["dependencies"]
    assert project["urls"]["Source"] == "https://github.com/roiops/roiops"
    assert set(project["optional-dependencies"]["onnx"]) == {"onnx", "onnxscript", "onnxruntime"}
    assert os.path.isfile(os.path.join(ROOT, "roiops", "py.typed"))
    assert "torch>=2.4" in pyproject()["build-system"]["requires"]


def test_setup_without_torch_says_what_to_do():
    # A finder that answers for torch as Python does when torch is not installed.
    code = (
        "import runpy, sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "sys.argv = ['setup.py', '--version']\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == ("roiops compiles against the installed torch, and torch is not installed: "
                                     "install torch first, then `pip install --no-build-isolation .`")
