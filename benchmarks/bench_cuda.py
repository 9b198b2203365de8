"""GPU benchmark: roiops' CUDA kernels next to torchvision's on the same card, in one run.

Measures what the CUDA issue targets, each beside torchvision with CUDA events (median of
repeats after warm-up): NCHW float32 forward; channels_last float16 / bfloat16 forward
(torchvision copies to NCHW and has no bfloat16, so bfloat16 is compared with its float16);
the fused 4-level FPN forward against torchvision's MultiScaleRoIAlign; forward+backward
(roiops' deterministic gather against torchvision's atomics), with 100 backward runs
checked bitwise equal; and roiops' box gradient against its input-gradient backward.

    python benchmarks/bench_cuda.py [--quick] [--save benchmarks/results/cuda-<device>.md]
"""

from __future__ import annotations

import argparse
import statistics
from collections import OrderedDict

import torch
import torchvision

import roiops
from roiops.bench.cases import CASES, problem


def median_ms(repeats: int, fn, *args) -> float:
    fn(*args)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def op_pair(case, aligned):
    if case.op == "roi_align":
        args = (case.size, case.scale, case.sampling_ratio, aligned)
        return (lambda x, r: roiops.roi_align(x, r, *args), lambda x, r: torchvision.ops.roi_align(x, r, *args))
    args = (case.size, case.scale)
    return (lambda x, r: roiops.roi_pool(x, r, *args), lambda x, r: torchvision.ops.roi_pool(x, r, *args))


def fwd_bwd(fn, x, rois, grad, wrt=None):
    """Forward and the gradient with respect to `wrt` (the map by default)."""
    return torch.autograd.grad(fn(x, rois), x if wrt is None else wrt, grad)


def single_map_rows(repeats: int, quick: bool):
    # The edge cases time call overhead; python -m roiops.bench --device cuda runs them.
    for case in (c.quick() if quick else c for c in CASES if not c.edge):
        ours, theirs = op_pair(case, case.aligned)
        for dtype, channels_last in ((torch.float32, False), (torch.float32, True),
                                     (torch.float16, True), (torch.bfloat16, True)):
            x, rois = problem(case)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x, rois = x.cuda().to(dtype).requires_grad_(), rois.cuda().to(dtype)
            tv_x = x if dtype != torch.bfloat16 else x.detach().half().requires_grad_()
            tv_rois = rois if dtype != torch.bfloat16 else rois.half()
            out = ours(x, rois)
            grad = torch.randn_like(out)
            row = OrderedDict(case=case.name, dtype=str(dtype).split(".")[1],
                              layout="channels_last" if channels_last else "NCHW", rois=rois.shape[0])
            row["fwd"] = (median_ms(repeats, ours, x, rois), median_ms(repeats, theirs, tv_x, tv_rois))
            tv_grad = grad if dtype != torch.bfloat16 else grad.half()
            row["fwd+bwd"] = (median_ms(repeats, fwd_bwd, ours, x, rois, grad),
                              median_ms(repeats, fwd_bwd, theirs, tv_x, tv_rois, tv_grad))
            first = fwd_bwd(ours, x, rois, grad)[0]
            row["bitwise stable x100"] = all(torch.equal(fwd_bwd(ours, x, rois, grad)[0], first) for _ in range(100))
            if case.op == "roi_align" and dtype == torch.float32:
                boxes = rois.clone().requires_grad_()
                row["box grad / input grad"] = (median_ms(repeats, fwd_bwd, ours, x, boxes, grad, boxes)
                                                / median_ms(repeats, fwd_bwd, ours, x, rois, grad))
            yield row


def fpn_rows(repeats: int, quick: bool):
    gen = torch.Generator().manual_seed(0)
    names = ["p2", "p3", "p4", "p5"]
    for channels_last in (False, True):
        feats = OrderedDict((n, torch.randn(2, 256, 200 // 2**i, 336 // 2**i, generator=gen).cuda())
                            for i, n in enumerate(names))
        if channels_last:
            feats = OrderedDict((n, f.contiguous(memory_format=torch.channels_last)) for n, f in feats.items())
        k = 256 if quick else 1024
        boxes = []
        for _ in range(2):
            xy = torch.rand(k // 2, 2, generator=gen) * 1000
            wh = 16 + torch.rand(k // 2, 2, generator=gen) * 400
            boxes.append(torch.cat([xy, xy + wh], 1).cuda())
        shapes = [(800, 1344)] * 2
        ours = roiops.MultiScaleRoIAlign(names, 7, 2)
        theirs = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
        yield OrderedDict(case="FPN P2-P5 fused", dtype="float32", layout="channels_last" if channels_last else "NCHW",
                          rois=k, fwd=(median_ms(repeats, ours, feats, boxes, shapes),
                                       median_ms(repeats, theirs, feats, boxes, shapes)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--save")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device here; nothing measured")
        return
    device = torch.cuda.get_device_name()
    lines = [f"roiops {roiops.__version__} vs torchvision {torchvision.__version__} on {device}, "
             f"torch {torch.__version__}", "",
             "| case | dtype | layout | RoIs | roiops fwd ms | torchvision fwd ms | fwd speedup "
             "| roiops fwd+bwd ms | torchvision fwd+bwd ms | fwd+bwd speedup | backward bitwise stable x100 "
             "| box grad / input grad |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in [*single_map_rows(args.repeats, args.quick), *fpn_rows(args.repeats, args.quick)]:
        fwd, fb = row["fwd"], row.get("fwd+bwd")
        cells = [row["case"], row["dtype"], row["layout"], str(row["rois"]), f"{fwd[0]:.3f}", f"{fwd[1]:.3f}",
                 f"{fwd[1] / fwd[0]:.2f}x",
                 *((f"{fb[0]:.3f}", f"{fb[1]:.3f}", f"{fb[1] / fb[0]:.2f}x") if fb else ("-", "-", "-")),
                 str(row.get("bitwise stable x100", "-")),
                 f"{row['box grad / input grad']:.2f}" if "box grad / input grad" in row else "-"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.save:
        with open(args.save, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
