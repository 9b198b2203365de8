"""CPU benchmark: roiops next to torchvision on the cases of shared/design/PERFORMANCE.md.

Both libraries run in the same process on the same inputs; each timing is the median
of repeats after a warm-up. Printed per case and layout: median ms of roiops and
torchvision, the speedup, roiops' effective bandwidth (output + feature map read,
forward) and that as a fraction of this machine's copy bandwidth, measured in the
same run. Where roiops' reference fits in memory its time is shown for scale.

    python benchmarks/bench_cpu.py            # full cases (a few minutes on 2 cores)
    python benchmarks/bench_cpu.py --quick    # scaled-down cases, about a minute
    python benchmarks/bench_cpu.py --save benchmarks/results/cpu.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import torch
import torchvision

import roiops
from roiops import reference
from roiops.testing import random_rois


@dataclasses.dataclass
class Case:
    name: str
    op: str  # "roi_align" or "roi_pool" (where torchvision has the same op)
    batch: int
    channels: int
    height: int
    width: int
    scale: float
    rois: int
    size: int
    sampling_ratio: int = 0
    aligned: bool = False
    quick_rois: int = 0  # RoI count in --quick mode

    def count(self, quick: bool) -> int:
        return self.quick_rois if quick and self.quick_rois else self.rois


# Single-level versions of the PERFORMANCE.md cases, scaled for a 2-core machine where
# noted (same shapes, fewer RoIs).
CASES = [
    Case("c4-box", "roi_align", 1, 1024, 50, 84, 1 / 16, 128, 14, 0, False, quick_rois=32),
    Case("fpn-box-train P2", "roi_align", 2, 256, 200, 336, 1 / 4, 1024, 7, 2, True, quick_rois=256),
    Case("fpn-mask-train P3", "roi_align", 2, 256, 100, 168, 1 / 8, 256, 14, 2, True, quick_rois=64),
    Case("infer-box", "roi_align", 1, 256, 50, 84, 1 / 16, 1000, 7, 2, True, quick_rois=250),
    Case("infer-mask", "roi_align", 1, 256, 100, 168, 1 / 8, 100, 14, 2, True),
    Case("tv-baseline 50x84", "roi_align", 1, 256, 50, 84, 1 / 16, 1024, 7, 2, False, quick_rois=256),
    Case("roipool-vgg", "roi_pool", 1, 512, 38, 63, 1 / 16, 500, 7, quick_rois=125),
    Case("roipool P2", "roi_pool", 2, 256, 200, 336, 1 / 4, 1024, 7, quick_rois=128),
    Case("roipool 50x84", "roi_pool", 1, 256, 50, 84, 1 / 16, 1024, 7, quick_rois=256),
]


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def median_ms(repeats: int, fn, *args) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def copy_bandwidth() -> float:
    """GB/s of a large clone (read + write), the roofline reference for this machine."""
    a = torch.empty(64 * 2**20 // 4).fill_(1.0)
    ms = median_ms(5, a.clone)
    return 2 * a.numel() * 4 / (ms * 1e-3) / 1e9


def problem(case: Case, quick: bool, channels_last: bool, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, case.channels, case.height, case.width, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    image = (case.height / case.scale, case.width / case.scale)
    rois = random_rois(case.count(quick), case.batch, image, min_size=16, generator=gen, dtype=dtype)
    return x, rois


def runners(case: Case):
    if case.op == "roi_align":
        args = (case.size, case.scale, case.sampling_ratio, case.aligned)
        return (lambda x, r: roiops.roi_align(x, r, *args),
                lambda x, r: torchvision.ops.roi_align(x, r, *args),
                lambda x, r: reference.roi_align(x, r, *args))
    args = (case.size, case.scale)
    return (lambda x, r: roiops.roi_pool(x, r, *args),
            lambda x, r: torchvision.ops.roi_pool(x, r, *args),
            lambda x, r: reference.roi_pool(x, r, *args))


def fwd_bwd(fn, x, rois):
    x = x.detach().requires_grad_()
    out = fn(x, rois)
    out.backward(torch.ones_like(out))


def first_touch(out):
    """Allocating and writing a tensor like the output once: a floor both libraries
    pay (mostly page faults on first touch for outputs of tens of MB)."""
    return torch.empty_like(out).zero_()


def reference_fits(case: Case, quick: bool) -> bool:
    # The reference materialises K x C x PH x PW x samples x 4 corners (align) or
    # K x C x PH x PW x H x W (pool) values; only time it where that stays small.
    per_bin = 4 * max(case.sampling_ratio, 2) ** 2 if case.op == "roi_align" else case.height * case.width
    return case.count(quick) * case.channels * case.size**2 * per_bin * 4 < 4e8


def run(quick: bool, repeats: int):
    bandwidth = copy_bandwidth()
    rows = []
    for case in CASES:
        ours, theirs, ref = runners(case)
        for channels_last in (False, True):
            x, rois = problem(case, quick, channels_last)
            out = ours(x, rois)
            # roi_align must agree; roi_pool may differ where torchvision's float32 bin
            # arithmetic (e.g. ceil(7 * (57 / 7)) = 58) adds a row past the box (README).
            differs = float(((out - theirs(x, rois)).abs() > 1e-4).float().mean())
            if case.op == "roi_align" and differs:
                raise AssertionError(f"{case.name}: roiops and torchvision disagree")
            fwd = [median_ms(repeats, f, x, rois) for f in (ours, theirs)]
            fb = [median_ms(repeats, fwd_bwd, f, x, rois) for f in (ours, theirs)]
            ref_ms = median_ms(1, ref, x, rois) if reference_fits(case, quick) else float("nan")
            floor_ms = median_ms(repeats, first_touch, out)
            moved = (out.numel() + x.numel()) * 4 / 1e9
            rows.append(dict(
                case=case.name, layout="channels_last" if channels_last else "NCHW",
                rois=case.count(quick), fwd=fwd, fb=fb, ref=ref_ms, differs=differs, floor=floor_ms,
                gbs=moved / (fwd[0] * 1e-3),
            ))
            r = rows[-1]
            print(f"{r['case']:<20} {r['layout']:<13} {r['rois']:>5} RoIs  fwd {fwd[0]:8.2f} ms vs "
                  f"{fwd[1]:8.2f} ms ({fwd[1] / fwd[0]:5.1f}x)  fwd+bwd {fb[0]:8.2f} vs {fb[1]:8.2f} ms "
                  f"({fb[1] / fb[0]:5.1f}x)", flush=True)
    return rows, bandwidth


def table(rows, bandwidth, quick: bool) -> str:
    lines = [
        f"Machine: {machine()}",
        f"Copy bandwidth (clone of 64 MiB, read+write): {bandwidth:.1f} GB/s. float32, median of repeats"
        + (", --quick (fewer RoIs)" if quick else "") + ".",
        "",
        "| case | layout | RoIs | roiops fwd ms | torchvision fwd ms | fwd speedup | roiops fwd+bwd ms "
        "| torchvision fwd+bwd ms | fwd+bwd speedup | roiops fwd GB/s (of copy BW) | output alloc+write ms "
        "| reference fwd ms | outputs differing from torchvision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['layout']} | {r['rois']} | {r['fwd'][0]:.2f} | {r['fwd'][1]:.2f} | "
            f"{r['fwd'][1] / r['fwd'][0]:.1f}x | {r['fb'][0]:.2f} | {r['fb'][1]:.2f} | "
            f"{r['fb'][1] / r['fb'][0]:.1f}x | {r['gbs']:.1f} ({100 * r['gbs'] / bandwidth:.0f}%) | {r['floor']:.1f} | "
            + ("-" if r["ref"] != r["ref"] else f"{r['ref']:.0f}") + f" | {100 * r['differs']:.3f}% |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer RoIs and repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--save", help="write the markdown table to this file")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    print(f"roiops {roiops.__version__} vs torchvision {torchvision.__version__} on {machine()}")
    rows, bandwidth = run(args.quick, repeats)
    text = table(rows, bandwidth, args.quick)
    print()
    print(text)
    if args.save:
        with open(args.save, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
