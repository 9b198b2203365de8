"""GPU benchmark: roiops' CUDA kernels next to torchvision's on the same card, in one run.

Measures what the CUDA issue targets, each beside torchvision with CUDA events (median of
repeats after warm-up): NCHW float32 forward; channels_last float16 / bfloat16 forward
(torchvision copies to NCHW; where it has no bfloat16, bfloat16 is compared with its
float16); the fused 4-level FPN pooler against torchvision's MultiScaleRoIAlign, forward
and forward+backward, NCHW float32 and channels_last bfloat16; forward+backward (roiops'
deterministic gather against torchvision's atomics), with 100 backward runs checked
bitwise equal; roiops' box gradient against its input-gradient backward; and with
--profile, torch.profiler's split of the FPN backward into kernels.

    python benchmarks/bench_cuda.py [--quick] [--fpn] [--profile] [--save FILE.md]

--fpn times only the FPN pooler (what benchmarks/gpu_checks.sh runs: about a minute).
"""

from __future__ import annotations

import argparse
import statistics
from collections import OrderedDict

import torch
import torchvision

import roiops
from roiops.bench.cases import CASES, Pyramid, problem, pyramid_problem


def median_ms(repeats: int, fn, *args) -> float:
    for _ in range(3):  # warm-up: first-call allocations and lazy kernel loading
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


FPN_NAMES = ["p2", "p3", "p4", "p5"]
# The fused-pooler timings: a detector's usual float32 NCHW, and channels_last bfloat16
# (torchvision is timed in bfloat16 where its kernels take it, else in float16).
FPN_VARIANTS = ((torch.float32, False), (torch.bfloat16, True))


def fpn_problem(quick: bool, dtype, channels_last: bool):
    """The box head's FPN case (roiops.bench.cases.Pyramid: P2-P5 of two 800x1344 images,
    256 channels, 1024 RoIs) on the GPU: features as a dict, boxes as per-image lists."""
    p = Pyramid().quick() if quick else Pyramid()
    feats, rois = pyramid_problem(p)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    feats = OrderedDict((n, f.cuda().to(dtype).contiguous(memory_format=fmt).requires_grad_())
                        for n, f in zip(FPN_NAMES, feats, strict=True))
    boxes = [rois[rois[:, 0] == i, 1:].cuda() for i in range(p.batch)]
    return p, feats, boxes, [p.image] * p.batch


def torchvision_takes(dtype) -> bool:
    try:
        x = torch.zeros(1, 1, 2, 2, device="cuda", dtype=dtype)
        torchvision.ops.roi_align(x, torch.zeros(1, 5, device="cuda", dtype=dtype), 1)
        return True
    except (RuntimeError, NotImplementedError):
        return False


def pooler_step(pooler, feats, boxes, shapes, grad=None):
    """The pooler's forward, and with ``grad`` the gradient of every level."""
    out = pooler(feats, boxes, shapes)
    return out if grad is None else torch.autograd.grad(out, list(feats.values()), grad)


def fpn_rows(repeats: int, quick: bool):
    for dtype, channels_last in FPN_VARIANTS:
        p, feats, boxes, shapes = fpn_problem(quick, dtype, channels_last)
        tv_dtype = dtype if torchvision_takes(dtype) else torch.float16
        tv_feats = OrderedDict((n, f.detach().to(tv_dtype).requires_grad_()) for n, f in feats.items())
        tv_boxes = [b.to(tv_dtype) for b in boxes]
        ours = roiops.MultiScaleRoIAlign(FPN_NAMES, p.size, p.sampling_ratio)
        theirs = torchvision.ops.MultiScaleRoIAlign(FPN_NAMES, p.size, p.sampling_ratio)
        grad = torch.randn_like(pooler_step(ours, feats, boxes, shapes))
        name = "FPN P2-P5 fused" + ("" if tv_dtype == dtype else f" (torchvision in {str(tv_dtype)[6:]})")
        row = OrderedDict(case=name, dtype=str(dtype)[6:], layout="channels_last" if channels_last else "NCHW",
                          rois=p.rois)
        row["fwd"] = (median_ms(repeats, pooler_step, ours, feats, boxes, shapes),
                      median_ms(repeats, pooler_step, theirs, tv_feats, tv_boxes, shapes))
        row["fwd+bwd"] = (median_ms(repeats, pooler_step, ours, feats, boxes, shapes, grad),
                          median_ms(repeats, pooler_step, theirs, tv_feats, tv_boxes, shapes, grad.to(tv_dtype)))
        first = pooler_step(ours, feats, boxes, shapes, grad)
        row["bitwise stable x100"] = all(
            all(torch.equal(a, b) for a, b in zip(pooler_step(ours, feats, boxes, shapes, grad), first, strict=True))
            for _ in range(100))
        yield row


def device_us(event) -> float:
    """An averaged profiler event's own device time in microseconds (the attribute was
    renamed from cuda_* to device_* in torch 2.4; both are read for older versions)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_backward(quick: bool, runs: int = 10) -> list[str]:
    """torch.profiler's split of the fused pooler's backward into device kernels (names,
    calls and time per backward) for each FPN variant, beside torchvision's."""
    from torch.profiler import ProfilerActivity, profile

    lines = []
    for dtype, channels_last in FPN_VARIANTS:
        p, feats, boxes, shapes = fpn_problem(quick, dtype, channels_last)
        tv_dtype = dtype if torchvision_takes(dtype) else torch.float16
        for impl, pooler_type, dt in (("roiops", roiops.MultiScaleRoIAlign, dtype),
                                      ("torchvision", torchvision.ops.MultiScaleRoIAlign, tv_dtype)):
            f = OrderedDict((n, t.detach().to(dt).requires_grad_()) for n, t in feats.items())
            b = [x.to(dt) for x in boxes]
            out = pooler_type(FPN_NAMES, p.size, p.sampling_ratio)(f, b, shapes)
            grad = torch.randn_like(out)
            torch.autograd.grad(out, list(f.values()), grad, retain_graph=True)  # warm-up
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(runs):
                    torch.autograd.grad(out, list(f.values()), grad, retain_graph=True)
                torch.cuda.synchronize()
            events = [e for e in prof.key_averages() if device_us(e) > 0]
            total = sum(device_us(e) for e in events)
            layout = "channels_last" if channels_last else "NCHW"
            lines += ["", f"backward of the fused FPN pooler, {impl}, {str(dt)[6:]} {layout}, {p.rois} RoIs: "
                          f"{total / runs / 1000:.3f} ms of device time per backward",
                      "", "| kernel | calls per backward | us per backward | share |", "|---|---|---|---|"]
            for e in sorted(events, key=device_us, reverse=True)[:12]:
                name = e.key if len(e.key) <= 100 else e.key[:97] + "..."
                lines.append(f"| `{name}` | {e.count / runs:g} | {device_us(e) / runs:.1f} "
                             f"| {100 * device_us(e) / total:.0f}% |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller problems")
    parser.add_argument("--fpn", action="store_true", help="only the fused FPN pooler rows")
    parser.add_argument("--profile", action="store_true", help="add the profiler split of the FPN backward")
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
    rows = [] if args.fpn else single_map_rows(args.repeats, args.quick)
    for row in [*rows, *fpn_rows(args.repeats, args.quick)]:
        fwd, fb = row["fwd"], row.get("fwd+bwd")
        cells = [row["case"], row["dtype"], row["layout"], str(row["rois"]), f"{fwd[0]:.3f}", f"{fwd[1]:.3f}",
                 f"{fwd[1] / fwd[0]:.2f}x",
                 *((f"{fb[0]:.3f}", f"{fb[1]:.3f}", f"{fb[1] / fb[0]:.2f}x") if fb else ("-", "-", "-")),
                 str(row.get("bitwise stable x100", "-")),
                 f"{row['box grad / input grad']:.2f}" if "box grad / input grad" in row else "-"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    if args.profile:
        lines += profile_backward(args.quick)
    text = "\n".join(lines)
    print(text)
    if args.save:
        with open(args.save, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
