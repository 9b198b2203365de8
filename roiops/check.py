"""``python -m roiops check``: every op x mode x sampling x dtype x memory format
against roiops.reference on random problems, with gradcheck in float64.

Prints one row per (variant, dtype): the largest forward / input-gradient /
box-gradient error over all random problems for NCHW and channels_last, whether
gradcheck + gradgradcheck pass (float64), and the kernel's forward time on a
medium problem. Exits non-zero when any row fails.
"""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
import time

import torch

import roiops
from roiops import reference
from roiops.testing import random_rois

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# (atol, rtol) against the reference; reduced dtypes are compared with a float32
# reference after one rounding to the dtype.
TOLERANCE = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 2e-2),
}
SHORT = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def variants():
    for aligned, mode, sampling in itertools.product([False, True], ["avg", "max"], ["bilinear", "nearest"]):
        yield "roi_align", dict(aligned=aligned, mode=mode, sampling=sampling)
    for mode, sampling in itertools.product(["avg", "max"], ["bilinear", "nearest"]):
        yield "roi_warp", dict(mode=mode, sampling=sampling)
    for mode in ["avg", "max"]:
        yield "roi_pool", dict(mode=mode)
    yield "ps_roi_align", {}
    yield "ps_roi_pool", {}
    yield "prroi_pool", {}
    for aligned, clockwise in [(True, False), (False, True)]:
        yield "roi_align_rotated", dict(aligned=aligned, clockwise=clockwise)


def has_box_grad(op, kw) -> bool:
    """Only bilinear roi_align, ps_roi_align, prroi_pool and roi_align_rotated have box
    gradients; roi_warp, roi_pool and ps_roi_pool round the box and nearest sampling is
    piecewise constant, so theirs are 0 by definition."""
    return op in ("ps_roi_align", "prroi_pool", "roi_align_rotated") or (
        op == "roi_align" and kw["sampling"] == "bilinear"
    )


def boxes_for(op, rois, gen):
    """roi_align_rotated's boxes (batch, cx, cy, w, h, angle) on the corner boxes
    ``rois``, turned by random angles in [-400, 400) degrees; the others' ``rois``."""
    if op != "roi_align_rotated":
        return rois
    b, x1, y1, x2, y2 = rois.double().unbind(1)
    angle = torch.rand(rois.shape[0], generator=gen, dtype=torch.float64) * 800 - 400
    return torch.stack([b, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angle], 1).to(rois.dtype)


def channels(op, per_bin, size) -> int:
    """The position-sensitive ops read per_bin channels for each bin; the others per_bin."""
    return per_bin * size[0] * size[1] if op.startswith("ps_") else per_bin


def cpu_name() -> str:
    name = ""
    try:
        if platform.system() == "Linux":
            with open("/proc/cpuinfo") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        elif platform.system() == "Darwin":
            name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, check=False).stdout.strip()
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return (f"{name}, {os.cpu_count()} logical cores, torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, roiops CPU kernels {roiops.cpu_capability}")


def describe(op, kw):
    return " ".join([op] + [f"{k}={v}" for k, v in kw.items()])


def call(impl, op, x, rois, size, scale, sr, kw):
    fn = getattr(impl, op)
    if op in ("roi_pool", "ps_roi_pool", "prroi_pool"):
        return fn(x, rois, size, scale, **kw)
    return fn(x, rois, size, scale, sr, **kw)


def random_problem(gen, dtype, op):
    N = 2
    H, W = (int(v) for v in torch.randint(3, 20, (2,), generator=gen))
    scale = [1.0, 0.5, 0.25][int(torch.randint(0, 3, (1,), generator=gen))]
    ih, iw = H / scale, W / scale
    rois = random_rois(6, N, (1.4 * ih, 1.4 * iw), min_size=0.5, generator=gen, dtype=torch.float64)
    rois[:, 1:] -= 0.2 * torch.tensor([iw, ih, iw, ih], dtype=torch.float64)  # some cross the border
    size = (int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(1, 5, (1,), generator=gen)))
    x = torch.randn(N, channels(op, 5, size), H, W, generator=gen, dtype=torch.float64)
    sr = [-1, 1, 2, 3][int(torch.randint(0, 4, (1,), generator=gen))]
    return x.to(dtype), boxes_for(op, rois, gen).to(dtype), size, scale, sr


def errors(op, kw, dtype, channels_last, problems):
    """Largest error / tolerance ratio of forward, input grad and box grad."""
    worst = [0.0, 0.0, 0.0]
    atol, rtol = TOLERANCE[dtype]
    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    for x, rois, size, scale, sr in problems:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        xk, rk = x.clone().requires_grad_(), rois.clone().requires_grad_()
        xr, rr = x.to(ref_dtype).requires_grad_(), rois.to(ref_dtype).requires_grad_()
        out = call(roiops, op, xk, rk, size, scale, sr, kw)
        ref = call(reference, op, xr, rr, size, scale, sr, kw)
        g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        gk = torch.autograd.grad(out, (xk, rk), g)
        gr = torch.autograd.grad(ref, (xr, rr), g.to(ref_dtype), allow_unused=True)
        gr = (gr[0], torch.zeros_like(rr) if gr[1] is None else gr[1])
        pairs = [(out.detach(), ref.detach()), (gk[0], gr[0]), (gk[1], gr[1])]
        for i, (a, b) in enumerate(pairs):
            if a.numel() == 0:
                continue
            bound = atol * (1 + (i == 2) * b.abs().max()) + rtol * b.abs()
            ratio = ((a.to(b.dtype) - b).abs() / bound).max()
            worst[i] = max(worst[i], float(ratio))
    return worst


def gradchecks(op, kw):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, channels(op, 3, (3, 2)), 7, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = boxes_for(op, torch.tensor([[0, 1.37, 2.23, 11.71, 9.13], [1, -3.3, 4.2, 20.1, 14.4]],
                                      dtype=torch.float64), gen)
    coords = rois[:, 1:].clone().requires_grad_()

    def f(x, c):
        return call(roiops, op, x, torch.cat([rois[:, :1], c], 1), (3, 2), 0.5, 2, kw)

    ok = torch.autograd.gradcheck(f, (x, coords), raise_exception=False)
    ok &= torch.autograd.gradgradcheck(lambda x: f(x, coords.detach()), (x,), raise_exception=False)
    return ok


def forward_ms(op, kw, dtype, channels_last):
    gen = torch.Generator().manual_seed(3)
    # The position-sensitive ops: 2 channels for each of the 7 x 7 bins.
    x = torch.randn(2, channels(op, 2, (7, 7)) if op.startswith("ps_") else 64, 50, 84, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = boxes_for(op, random_rois(256, 2, (800, 1344), generator=gen, dtype=dtype), gen)
    call(roiops, op, x, rois, 7, 1 / 16, 2, kw)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        call(roiops, op, x, rois, 7, 1 / 16, 2, kw)
        times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[1]


def main(problems_per_row: int = 12) -> int:
    print(f"roiops {roiops.__version__} self-check against roiops.reference; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CPU: {cpu_name()}")
    print(f"{problems_per_row} random problems per row; error = max |kernel - reference| / tolerance "
          "(pass below 1), as forward / input grad / box grad")
    print("n/a: not applicable. Box grad: only bilinear roi_align, ps_roi_align, prroi_pool and roi_align_rotated "
          "have one (roi_warp, roi_pool, ps_roi_pool and nearest sampling: 0 by definition). gradcheck: float64 only")
    header = f"{'variant':<52} {'dtype':<5} {'error NCHW':>17} {'error ch_last':>17} {'gradcheck':>9} {'fwd ms':>7}  "
    print(header + "result")
    print("-" * (len(header) + 6))
    failures = 0
    for op, kw in variants():
        grad_ok = gradchecks(op, kw)
        for dtype in DTYPES:
            gen = torch.Generator().manual_seed(hash((op, tuple(kw.items()), str(dtype))) % 2**31)
            problems = [random_problem(gen, dtype, op) for _ in range(problems_per_row)]
            errs = [errors(op, kw, dtype, cl, problems) for cl in (False, True)]
            passed = all(e < 1 for row in errs for e in row) and (dtype != torch.float64 or grad_ok)
            failures += not passed
            gc = ("ok" if grad_ok else "FAIL") if dtype == torch.float64 else "n/a"
            # The box-gradient error is still measured (the kernels must return zeros),
            # but a box gradient that is 0 by definition is not reported as a result.
            fmt = ["/".join([f"{e:.2f}" for e in row[:2]] + [f"{row[2]:.2f}" if has_box_grad(op, kw) else "n/a"])
                   for row in errs]
            ms = forward_ms(op, kw, dtype, True)
            print(f"{describe(op, kw):<52} {SHORT[dtype]:<5} {fmt[0]:>17} {fmt[1]:>17} {gc:>9} "
                  f"{ms:7.2f}  {'pass' if passed else 'FAIL'}")
    print(f"\n{'all variants pass' if failures == 0 else f'{failures} rows FAILED'}")
    return 1 if failures else 0
