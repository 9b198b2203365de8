"""Every CUDA op once on a small problem, for compute-sanitizer (benchmarks/gpu_checks.sh):
forward, input gradient, JVP and box gradient, single-map and multilevel, with boxes
inside, across and outside the map, in each dtype and layout, or with --subset in the
three that reach every kernel variant (float32 NCHW: one channel per thread; bfloat16
and float64 channels_last: 8- and 2-channel packs, since C = 16)."""

import argparse

import torch

import roiops

ALL = [(dtype, cl) for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) for cl in (False, True)]
SUBSET = [(torch.float32, False), (torch.bfloat16, True), (torch.float64, True)]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subset", action="store_true", help="three dtype/layout pairs instead of all eight")
    args = parser.parse_args()
    torch.manual_seed(0)
    rois = torch.tensor([[0, 1.5, 2.0, 20.0, 14.0], [1, -8.0, -3.0, 40.0, 50.0], [0, 30.0, 30.0, 31.0, 31.0],
                         [1, 100.0, 100.0, 120.0, 130.0], [0, 9.0, 4.0, 3.0, 2.0]], device="cuda")
    levels = torch.tensor([0, 1, 1, 0, 1], device="cuda")
    scales = [0.5, 0.25]
    for dtype, channels_last in SUBSET if args.subset else ALL:
        maps = [torch.randn(2, 16, s, s + 3, device="cuda", dtype=dtype) for s in (24, 12)]
        if channels_last:
            maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
        maps = [m.requires_grad_() for m in maps]
        for op in ("roi_align", "roi_warp", "roi_pool"):
            for mode in ("avg", "max"):
                kw = dict(output_size=3, spatial_scale=0.5, mode=mode)
                if op != "roi_pool":
                    kw["sampling_ratio"] = 2
                boxes = rois.to(dtype).requires_grad_(op == "roi_align")
                out = getattr(roiops, op)(maps[0], boxes, **kw)
                inputs = [maps[0], boxes] if op == "roi_align" else [maps[0]]
                torch.autograd.grad(out, inputs, torch.randn_like(out))
                extra = [True] if op == "roi_align" else []
                p = [3, 3, mode] if op == "roi_pool" else [3, 3, 2, *extra, mode, "bilinear"]
                ops = torch.ops.roiops
                o, arg = getattr(ops, f"{op}_multilevel")(maps, rois, levels, scales, *p, True)
                grad = torch.ones_like(o)
                getattr(ops, f"_{op}_multilevel_backward")(grad, maps, arg, rois, levels, scales, *p)
                getattr(ops, f"_{op}_multilevel_jvp")(maps, arg, rois, levels, scales, *p)
                if op == "roi_align":
                    ops._roi_align_multilevel_backward_rois(grad, maps, arg, rois, levels, scales, *p)
    torch.cuda.synchronize()
    print("all CUDA ops ran")


if __name__ == "__main__":
    main()
