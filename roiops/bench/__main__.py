"""Command line of the benchmark; ``python -m roiops.bench --help``.

The parent process runs one child process per allocator setting (glibc reads its
settings from the environment at process start), collects their JSON and writes the
report."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import report
from .cases import CASES
from .peers import PEERS
from .suite import DTYPES, measure_config

# glibc malloc settings. "mapped": blocks of any size come from the heap and freed memory
# is never returned to the OS, so a reused buffer's pages stay mapped, as in inference
# runtimes that keep their buffers. "default": blocks above glibc's threshold (at most
# 32 MiB) are fresh mappings, page-faulted on first touch and unmapped when freed.
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
ALLOCATORS = {
    "mapped": ({"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"},
               "memory kept mapped (MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736)"),
    "default": ({}, "default glibc allocator (large blocks freshly mapped, page faults on first touch)"),
}
CUDA_CONFIG = "PyTorch's CUDA caching allocator (the glibc settings concern CPU memory only)"
SECTIONS = ("multilevel", "scaling")


def _names(text: str, known: list[str] | tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m roiops.bench",
        description="roiops against torchvision, ONNX Runtime, OpenVINO and its reference on the same inputs: "
                    "medians and spread of repeats, speedups, effective GB/s against this run's copy bandwidth, "
                    "the speed targets; JSON, markdown and PNGs under benchmarks/results/.",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true",
                   help="scaled-down cases (an eighth of the channels and RoIs) and few repeats: about 2 minutes "
                        "on 2 cores; writes under benchmarks/results/quick/ unless --out is given")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--cases", type=lambda s: _names(s, [c.name for c in CASES] + list(SECTIONS), "case"),
                   default=None, help=f"comma-separated subset of: {', '.join(c.name for c in CASES)}, "
                                      f"{', '.join(SECTIONS)} (default: all)")
    p.add_argument("--peers", type=lambda s: _names(s, PEERS, "peer"), default=list(PEERS),
                   help=f"comma-separated implementations to compare with (default: {','.join(PEERS)}; "
                        "'' for roiops alone); one that is not installed is skipped with a note")
    p.add_argument("--allocators", type=lambda s: _names(s, list(ALLOCATORS), "allocator"),
                   default=list(ALLOCATORS), help="glibc settings to run, each in its own process "
                                                  "(default: mapped,default; CPU only)")
    p.add_argument("--dtypes", type=lambda s: _names(s, list(DTYPES), "dtype"), default=list(DTYPES),
                   help="default: float32,bfloat16")
    p.add_argument("--threads", type=int, default=2,
                   help="torch (and runtime) threads; the targets are for 2 (default 2); scaling also runs 1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # How the parent starts a child: the allocator it runs under and where its JSON goes.
    p.add_argument("--child", choices=list(ALLOCATORS), help=argparse.SUPPRESS)
    p.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    return p


def _child_argv(args: argparse.Namespace, allocator: str, cases: list[str], path: Path) -> list[str]:
    argv = [sys.executable, "-m", "roiops.bench", "--child", allocator, "--child-json", str(path),
            "--device", args.device, "--threads", str(args.threads), "--cases", ",".join(cases),
            "--peers", ",".join(args.peers), "--dtypes", ",".join(args.dtypes)]
    return argv + ["--quick"] * args.quick + ["--no-progress"] * args.no_progress


def _run_child(args: argparse.Namespace) -> int:
    import torch

    selected = args.cases
    cases = [c.quick() if args.quick else c for c in CASES if c.name in selected]
    description = CUDA_CONFIG if args.device == "cuda" else ALLOCATORS[args.child][1]
    result = measure_config(args.child, description, torch.device(args.device), args.threads, args.quick, args.peers,
                            cases, args.dtypes, "multilevel" in selected, "scaling" in selected,
                            not args.no_progress)
    result["allocator_env"] = {v: os.environ.get(v) for v in MALLOC_VARIABLES}
    args.child_json.write_text(json.dumps(result))
    return 0


def _cuda_ready() -> str | None:
    """Why ``--device cuda`` cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False here (torch " + torch.__version__ + ")"
    import roiops

    try:
        roiops.roi_align(torch.zeros(1, 1, 2, 2, device="cuda"), torch.zeros(1, 5, device="cuda"), 1)
    except (RuntimeError, NotImplementedError) as error:
        return f"roiops has no CUDA kernels in this build ({type(error).__name__}: {str(error)[:200]})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads < 1:
        parser().error("--threads must be at least 1")
    if args.cases is None:
        args.cases = [c.name for c in CASES] + list(SECTIONS)
    if args.child:
        return _run_child(args)
    if args.device == "cuda":
        problem = _cuda_ready()
        if problem:
            print(f"python -m roiops.bench --device cuda: {problem}; nothing measured", file=sys.stderr)
            return 2
    began = time.time()
    out = args.out or Path("benchmarks/results/quick" if args.quick else "benchmarks/results")
    allocators = ["default"] if args.device == "cuda" else args.allocators
    configs, failures = [], []
    with tempfile.TemporaryDirectory(prefix="roiops-bench-") as tmp:
        for i, allocator in enumerate(allocators):
            variables, description = ALLOCATORS[allocator]
            if args.device == "cuda":
                description = CUDA_CONFIG
            env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES} | variables
            # The scaling sweeps run once, under the first setting: they are about
            # threads, RoIs and channels, not the allocator.
            cases = [c for c in args.cases if c != "scaling" or i == 0]
            path = Path(tmp) / f"{allocator}.json"
            print(f"[{i + 1}/{len(allocators)}] {description}", flush=True)
            code = subprocess.run(_child_argv(args, allocator, cases, path), env=env).returncode
            if code != 0 or not path.exists():
                failures.append(f"the {allocator} run failed (exit code {code}); its results are missing")
                continue
            configs.append(json.loads(path.read_text()))
    if not configs:
        print("; ".join(failures), file=sys.stderr)
        return 1
    result = dict(
        command="python -m roiops.bench " + " ".join(sys.argv[1:] if argv is None else argv),
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        device=args.device, quick=args.quick, threads=args.threads, machine=configs[0]["machine"],
        peers=configs[0]["peers"], configs=configs, notes=[], failures=failures, seconds=round(time.time() - began, 1),
    )
    text, paths = report.write(result, out, f"{args.device}-bench")
    print(text)
    print("results: " + ", ".join(str(p) for p in paths))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
