"""python -m roiops: help without a command, --version, and check's table marks what
does not apply and names the CPU."""

import os
import subprocess
import sys

import pytest
import torch

import roiops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "roiops", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_no_command_prints_help():
    result = run()
    assert result.returncode == 0, result.stderr
    assert "usage: python -m roiops" in result.stdout and "check" in result.stdout


def test_version():
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"roiops {roiops.__version__} (torch {torch.__version__})"


@pytest.mark.slow
def test_check_marks_columns_that_do_not_apply_and_names_the_cpu():
    result = run("check", "--problems", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("CPU: ") and "cores" in line for line in lines)
    rows = {}
    for line in lines:
        if line.startswith(("roi_align ", "roi_warp ", "roi_pool ", "ps_roi_align ", "ps_roi_pool ",
                            "prroi_pool ", "roi_align_rotated ")) and line.endswith("pass"):
            rows.setdefault(line.split()[0], []).append(line)
    assert sum(map(len, rows.values())) == 19 * 4
    for op, op_rows in rows.items():
        for line in op_rows:
            fields = line.split()
            dtype, nchw, gradcheck = fields[-6], fields[-5], fields[-3]
            box = nchw.split("/", 2)[2]
            has_box = op in ("roi_align", "ps_roi_align", "prroi_pool", "roi_align_rotated")
            assert (box == "n/a") == (not has_box or "sampling=nearest" in line), line
            assert (gradcheck == "n/a") == (dtype != "f64"), line
