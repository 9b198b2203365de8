"""Every CUDA op once on a small problem, for compute-sanitizer (benchmarks/gpu_checks.sh):
forward, input gradient, JVP and box gradient, single-map and multilevel, each dtype and
layout, with boxes inside, across and outside the map."""

import torch

import roiops

torch.manual_seed(0)
rois = torch.tensor([[0, 1.5, 2.0, 20.0, 14.0], [1, -8.0, -3.0, 40.0, 50.0], [0, 30.0, 30.0, 31.0, 31.0],
                     [1, 100.0, 100.0, 120.0, 130.0], [0, 9.0, 4.0, 3.0, 2.0]], device="cuda")
levels = torch.tensor([0, 1, 1, 0, 1], device="cuda")
for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
    for channels_last in (False, True):
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
                o, arg = getattr(torch.ops.roiops, f"{op}_multilevel")(maps, rois, levels, [0.5, 0.25], *p, True)
                getattr(torch.ops.roiops, f"_{op}_multilevel_backward")(torch.ones_like(o), maps, arg, rois, levels,
                                                                        [0.5, 0.25], *p)
                getattr(torch.ops.roiops, f"_{op}_multilevel_jvp")(maps, arg, rois, levels, [0.5, 0.25], *p)
torch.cuda.synchronize()
print("all CUDA ops ran")
