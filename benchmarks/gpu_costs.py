"""The CUDA kernels' counted cost, measured in the grid emulator (no GPU needed).

Two parts, both on CPU tensors through the ``roiops_emulated`` ops, which run the CUDA
kernels' own per-thread code:

1. Counters (``roiops._C.emulator_costs``, compiled only into the emulator): per op call,
   the launches, threads, global loads and stores (data: maps, output gradients,
   argmax; table: per-RoI tables and RoI lists), samples read, and for the input
   gradient the RoIs each thread visited and how many of those held its pixel. Run for
   the PERFORMANCE.md GPU cases at ``--channels`` channels (counts per element do not
   depend on C; bytes are scaled to the case's C for the estimates), beside the counts
   of torchvision's CUDA algorithm for the same problem (derived from its kernels'
   structure, not measured) and a bandwidth floor for an H200 and a consumer GPU.
2. Emulated time: the input gradient's emulated time over the forward's, on the FPN P2
   case of the GPU issue (1 image, 200 x 336 at 1/4, 512 RoIs, 7 x 7, sr 2, every RoI
   on the one map) and on the fused FPN box-training call, both layouts. The
   emulator's CPU time is proportional to the kernels' total work.

    python benchmarks/gpu_costs.py [--channels 16] [--save benchmarks/results/gpu-costs.md]

Nothing here ran on a GPU: the estimates are floors from counted bytes, not timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

import roiops
from roiops import _C
from roiops.ops.poolers import fpn_levels
from roiops.testing import random_rois

EMU = torch.ops.roiops_emulated

# Bandwidths for the floors (bytes/s): HBM / GDDR from the vendors' specifications; L2
# bandwidth is not published and is taken as 2.5x HBM on the H200 and 5x GDDR on the
# consumer card (order-of-magnitude assumptions, stated as such in the output).
GPUS = {
    "H200": {"dram": 4.8e12, "l2": 12e12},
    "RTX 4090": {"dram": 1.0e12, "l2": 5e12},
}


@dataclasses.dataclass(frozen=True)
class GpuCase:
    name: str
    op: str  # roi_align (avg, bilinear, aligned) or roi_pool (max)
    batch: int
    channels: int  # the case's C (bytes are scaled to it)
    rois: int
    size: int
    sampling_ratio: int
    image: tuple[int, int]
    scales: tuple[float, ...]  # one map (C4, VGG) or the FPN levels P2-P5


FPN = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
CASES = (
    GpuCase("fpn-box-train", "roi_align", 2, 256, 1024, 7, 2, (800, 1344), FPN),
    GpuCase("fpn-mask-train", "roi_align", 2, 256, 256, 14, 2, (800, 1344), FPN),
    GpuCase("infer-box", "roi_align", 1, 256, 1000, 7, 2, (800, 1344), FPN),
    GpuCase("infer-mask", "roi_align", 1, 256, 100, 14, 2, (800, 1344), FPN),
    GpuCase("c4-box", "roi_align", 1, 1024, 512, 14, 0, (800, 1344), (1 / 16,)),
    GpuCase("roipool-vgg", "roi_pool", 1, 512, 2000, 7, 0, (608, 1008), (1 / 16,)),
)


def problem(case: GpuCase, channels: int, channels_last: bool, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    maps = []
    for s in case.scales:
        x = torch.randn(case.batch, channels, int(case.image[0] * s), int(case.image[1] * s), generator=gen)
        x = x.to(dtype)
        maps.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    rois = random_rois(case.rois, case.batch, case.image, min_size=16, generator=gen)
    rois = rois[torch.argsort(rois[:, 0], stable=True)]
    levels = fpn_levels(rois, 2, 5) if len(maps) > 1 else None
    return maps, rois, levels


def params(case: GpuCase, mode: str | None = None) -> list:
    if case.op == "roi_pool":
        return [case.size, case.size, mode or "max"]
    return [case.size, case.size, case.sampling_ratio, True, mode or "avg", "bilinear"]


def call(case, maps, rois, levels, p, which, grad=None, argmax=None):
    """One emulated op call: the forward, or the input or box gradient."""
    name = case.op + ("_multilevel" if levels is not None else "")
    index = (rois, levels, list(case.scales)) if levels is not None else (rois, case.scales[0])
    inputs = maps if levels is not None else maps[0]
    if which == "forward":
        return getattr(EMU, name)(inputs, *index, *p, True)
    op = f"_{name}_backward" if which == "input gradient" else f"_{name}_backward_rois"
    return getattr(EMU, op)(grad, inputs, argmax, *index, *p)


def counted(fn):
    """The emulator's counters over one call of fn, summed over kernels, plus the
    ATen allocations and device launches of the call's host code (from the profiler:
    every allocating or computing ATen op would be a launch or allocation on a GPU)."""
    _C.emulator_costs(True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    kernels = _C.emulator_costs(False)
    total = {key: (max if key == "longest_walk" else sum)(k[key] for k in kernels.values())
             for key in next(iter(kernels.values()))}
    aten = [e.key for e in prof.key_averages() for _ in range(e.count)]
    total["allocations"] = sum(1 for k in aten if k in ("aten::empty", "aten::empty_strided"))
    compute = {"aten::sort", "aten::searchsorted", "aten::arange", "aten::cumsum", "aten::copy_", "aten::fill_",
               "aten::zero_"}
    total["aten launches"] = sum(1 for k in aten if k in compute)
    total["kernels"] = kernels
    return total


def torchvision_counts(case: GpuCase, out_elems: int, samples: int, in_elems: int) -> dict:
    """torchvision's CUDA roi_align / roi_pool, per their kernels' structure: the
    forward runs one thread per output element and computes the bilinear weights
    inline from the box (5 box loads per thread, 4 map loads per sample; roi_pool 1 per
    pixel); the backward zero-fills the input gradient, then one thread per output
    element loads its gradient (and argmax) and atomically adds into the input
    gradient, 4 atomics per sample (roi_pool: 1 per bin)."""
    if case.op == "roi_pool":
        return {"fwd loads": out_elems * 5 + samples, "bwd atomics": out_elems,
                "bwd loads": out_elems * 7, "zero fill": in_elems}
    return {"fwd loads": out_elems * 5 + 4 * samples, "bwd atomics": 4 * samples,
            "bwd loads": out_elems * 6, "zero fill": in_elems}


def measure_case(case: GpuCase, channels: int, channels_last: bool, dtype: torch.dtype) -> dict:
    maps, rois, levels = problem(case, channels, channels_last, dtype)
    p = params(case)
    fwd = counted(lambda: call(case, maps, rois, levels, p, "forward"))
    out, argmax = call(case, maps, rois, levels, p, "forward")
    grad = torch.randn_like(out)
    bwd = counted(lambda: call(case, maps, rois, levels, p, "input gradient", grad, argmax))
    box = None
    if case.op == "roi_align":
        box = counted(lambda: call(case, maps, rois, levels, p, "box gradient", grad, argmax))
    scale = case.channels / channels
    esize = torch.finfo(dtype).bits // 8
    out_bytes = out.numel() * esize * scale
    map_bytes = sum(m.numel() for m in maps) * esize * scale
    return {"fwd": fwd, "bwd": bwd, "box": box, "out_bytes": out_bytes, "map_bytes": map_bytes,
            "out_elems": out.numel() * scale, "in_elems": sum(m.numel() for m in maps) * scale, "scale": scale}


def floor_us(dram_bytes: float, l2_bytes: float, gpu: dict) -> float:
    return 1e6 * max(dram_bytes / gpu["dram"], l2_bytes / gpu["l2"])


def cost_table(channels: int) -> list[str]:
    lines = [
        f"Counted at C = {channels} (bytes scaled to each case's C); float32 NCHW and bfloat16 channels_last.",
        "Loads/sample: data and table loads of the forward per sample read (a packed channels_last "
        "load counts once; a sample read is one 16-byte pack of channels_last channels or one NCHW channel). "
        "Bwd visits: RoI list entries an input-gradient thread looked at, over the RoIs whose footprint "
        "holds its pixel / over the RoIs that can read it (a sample row and a sample column of theirs touch "
        "it). Bwd loads/element: per input-gradient element. Launches: emulated kernel launches + ATen ops "
        "that launch on a GPU (sort, searchsorted, arange, cumsum, copy, fill). Floors: max(DRAM bytes / "
        "DRAM BW, counted "
        "load+store bytes / L2 BW), DRAM bytes = output + maps (forward: output + maps read once; "
        "input gradient: output gradient + maps written once).",
        "",
        "| case | layout | fwd loads/sample (data + table) | fwd launches / allocs | "
        "bwd visits / footprint, / reading | bwd loads/element | bwd launches / allocs | box-grad loads/sample | "
        "H200 floor fwd / bwd us | "
        "RTX 4090 floor fwd / bwd us | torchvision fwd loads/sample, bwd atomics/element |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    walks = ["", "Longest walk: the most loop steps one thread of the kernel took (taps built, RoIs walked), "
             "its chain of dependent loads, which more threads do not shorten; float32 NCHW.", "",
             "| case | table (per RoI) | list build (per tile and chunk) | input gradient (per strip) |",
             "|---|---|---|---|"]
    for case in CASES:
        for channels_last, dtype in ((False, torch.float32), (True, torch.bfloat16)):
            r = measure_case(case, channels, channels_last, dtype)
            f, b, x = r["fwd"], r["bwd"], r["box"]
            s = r["scale"]
            fwd_lps = (f["data_loads"] + f["table_loads"]) / max(f["samples"], 1)
            fwd_data = f["data_loads"] / max(f["samples"], 1)
            visits = (f"{b['roi_visits'] / max(b['roi_footprint'], 1):.2f}, "
                      f"{b['roi_visits'] / max(b['roi_useful'], 1):.2f}")
            bwd_lpe = (b["data_loads"] + b["table_loads"]) / max(r["in_elems"] / s, 1)
            box = "-" if x is None else f"{(x['data_loads'] + x['table_loads']) / max(x['samples'], 1):.2f}"
            floors = []
            for gpu in GPUS.values():
                fwd_l2 = (f["data_bytes"] + f["table_bytes"] + f["store_bytes"]) * s
                bwd_l2 = (b["data_bytes"] + b["table_bytes"] + b["store_bytes"]) * s
                floors.append(f"{floor_us(r['out_bytes'] + r['map_bytes'], fwd_l2, gpu):.0f} / "
                              f"{floor_us(r['out_bytes'] + r['map_bytes'], bwd_l2, gpu):.0f}")
            pack = 16 // (torch.finfo(dtype).bits // 8) if channels_last else 1
            samples_per_elem = f["samples"] * pack / max(r["out_elems"] / s, 1)
            tv = torchvision_counts(case, r["out_elems"], samples_per_elem * r["out_elems"], r["in_elems"])
            tv_cell = (f"{tv['fwd loads'] / max(samples_per_elem * r['out_elems'], 1):.2f}, "
                       f"{tv['bwd atomics'] / r['in_elems']:.2f}")
            layout = "channels_last bf16" if channels_last else "NCHW fp32"
            if not channels_last:
                walk = {name: k["longest_walk"] for name, k in b["kernels"].items()}
                kind = "sampled" if case.op == "roi_align" else "pool"
                walks.append(f"| {case.name} | {walk[kind + '_table']} | {walk['list_rois_count']} | "
                             f"{walk[kind + '_backward_input']} |")
            lines.append(
                f"| {case.name} | {layout} | {fwd_lps:.2f} ({fwd_data:.2f} + {fwd_lps - fwd_data:.2f}) | "
                f"{f['launches'] + f['aten launches']} / {f['allocations']} | {visits} | {bwd_lpe:.1f} | "
                f"{b['launches'] + b['aten launches']} / {b['allocations']} | {box} | {floors[0]} | {floors[1]} | "
                f"{tv_cell} |")
    return lines + walks


def p2_problem(channels_last: bool, channels: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, 200, 336, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = random_rois(512, 1, (800, 1344), min_size=16, generator=gen)
    return x, rois


def emulated_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_table(channels: int, repeats: int) -> list[str]:
    lines = [
        f"FPN P2 case: 1 image, C = {channels}, 200 x 336 at 1/4, 512 RoIs, 7 x 7, sr 2, float32; "
        f"emulated (CPU) medians of {repeats}, {torch.get_num_threads()} threads.",
        "",
        "| op | layout | forward ms | input gradient ms | ratio |",
        "|---|---|---|---|---|",
    ]
    variants = [("roi_align avg", "roi_align", [7, 7, 2, True, "avg", "bilinear"]),
                ("roi_align max", "roi_align", [7, 7, 2, True, "max", "bilinear"]),
                ("roi_pool max", "roi_pool", [7, 7, "max"])]
    for label, op, p in variants:
        for channels_last in (False, True):
            x, rois = p2_problem(channels_last, channels)
            out, argmax = getattr(EMU, op)(x, rois, 0.25, *p, True)
            grad = torch.randn_like(out)
            fwd = emulated_time(lambda op=op, x=x, rois=rois, p=p: getattr(EMU, op)(x, rois, 0.25, *p, True),
                                repeats)
            bwd = emulated_time(
                lambda op=op, x=x, rois=rois, p=p, grad=grad, argmax=argmax: getattr(EMU, f"_{op}_backward")(
                    grad, x, argmax, rois, 0.25, *p), repeats)
            layout = "channels_last" if channels_last else "NCHW"
            lines.append(f"| {label} | {layout} | {fwd * 1e3:.1f} | {bwd * 1e3:.1f} | {bwd / fwd:.2f} |")
    # The same ratio where FPN puts each RoI on the level that matches its size.
    case = CASES[0]
    lines += ["", f"{case.name}: the fused P2-P5 call of the counters' case at C = {channels}, float32.", "",
              "| op | layout | forward ms | input gradient ms | ratio |", "|---|---|---|---|---|"]
    for label, mode in (("roi_align avg", "avg"), ("roi_align max", "max")):
        for channels_last in (False, True):
            maps, rois, levels = problem(case, channels, channels_last, torch.float32)
            p = params(case, mode)
            out, argmax = call(case, maps, rois, levels, p, "forward")
            grad = torch.randn_like(out)
            fwd = emulated_time(lambda maps=maps, rois=rois, levels=levels, p=p: call(
                case, maps, rois, levels, p, "forward"), repeats)
            bwd = emulated_time(lambda maps=maps, rois=rois, levels=levels, p=p, grad=grad, argmax=argmax: call(
                case, maps, rois, levels, p, "input gradient", grad, argmax), repeats)
            layout = "channels_last" if channels_last else "NCHW"
            lines.append(f"| {label} | {layout} | {fwd * 1e3:.1f} | {bwd * 1e3:.1f} | {bwd / fwd:.2f} |")
    return lines


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=16, help="channels the emulator runs (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the emulated P2 case")
    parser.add_argument("--save", help="write the tables to this Markdown file")
    args = parser.parse_args()
    head = [f"# CUDA kernels' counted cost (grid emulator, roiops {roiops.__version__})", "",
            f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
            "Nothing here ran on a GPU.", ""]
    out = head + ["## Counters", ""] + cost_table(args.channels) + ["", "## Emulated time", ""]
    out += time_table(args.channels, args.repeats)
    text = "\n".join(out) + "\n"
    print(text)
    if args.save:
        with open(args.save, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
