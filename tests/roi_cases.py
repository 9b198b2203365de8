"""Random RoI problems for the tests: hypothesis strategies and the op table."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import strategies as st

import roiops
from roiops import reference
from roiops.check import DTYPES, TOLERANCE  # noqa: F401  (re-exported to the tests)

OPS = ("roi_align", "roi_warp", "roi_pool")
# The position-sensitive ops (torchvision's, one map only, avg), prroi_pool and
# roi_align_rotated (CPU only so far): `cases` draws them only where a test asks.
PS_OPS = ("ps_roi_align", "ps_roi_pool")
GPU_OPS = OPS + PS_OPS  # the ops with CUDA (and emulated) kernels
ALL_OPS = GPU_OPS + ("prroi_pool", "roi_align_rotated")


@dataclasses.dataclass
class Case:
    op: str
    input: torch.Tensor
    rois: torch.Tensor
    kwargs: dict

    def run(self, impl, input=None, rois=None):
        fn = getattr(impl, self.op)
        return fn(self.input if input is None else input,
                  self.rois if rois is None else rois, **self.kwargs)

    @property
    def output_channels(self) -> int:
        """C, or C / (PH * PW) for the position-sensitive ops."""
        C = self.input.shape[1]
        if self.op not in PS_OPS:
            return C
        ph, pw = roiops._validation.output_size_pair("test", self.kwargs["output_size"])
        return C // (ph * pw)

    def __repr__(self):
        return (f"Case({self.op}, input={tuple(self.input.shape)} {self.input.dtype}, "
                f"rois={self.rois.tolist()}, {self.kwargs})")


def op_kwargs(op: str, output_size, scale, sampling_ratio, aligned, mode, sampling, clockwise=False):
    if op == "roi_align_rotated":  # avg and bilinear only
        return dict(output_size=output_size, spatial_scale=scale, sampling_ratio=sampling_ratio,
                    aligned=aligned, clockwise=clockwise)
    if op in PS_OPS or op == "prroi_pool":  # avg only; ps_roi_align is bilinear and aligned
        kw = dict(output_size=output_size, spatial_scale=scale)
        if op == "ps_roi_align":
            kw.update(sampling_ratio=sampling_ratio)
        return kw
    kw = dict(output_size=output_size, spatial_scale=scale, mode=mode)
    if op != "roi_pool":
        kw.update(sampling_ratio=sampling_ratio, sampling=sampling)
    if op == "roi_align":
        kw.update(aligned=aligned)
    return kw


coordinate = st.one_of(
    st.floats(-8, 40, allow_nan=False, width=32),
    st.integers(-4, 36).map(float),          # exact pixel borders
    st.integers(-8, 72).map(lambda v: v / 2),  # half-pixels: rounding ties
)


SPECIALS = (float("nan"), float("inf"), float("-inf"))

# roi_align_rotated's angles in degrees: axis-aligned ones (exact quarter turns meet pixel
# borders), any angle, and angles beyond +-180 and +-360.
angle = st.one_of(
    st.sampled_from([0.0, 90.0, -90.0, 180.0, 45.0, -30.0, 270.0, 720.0, -450.0, 1e6 + 30.0]),
    st.floats(-400, 400, allow_nan=False, width=32),
)


def rotated_row(b, x1, y1, x2, y2, a):
    """A rotated box row (batch, cx, cy, w, h, angle) on the corners' box (w, h < 0 when inverted)."""
    return [b, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, a]


@st.composite
def cases(draw, op=None, dtype=None, channels_last=None, box_dtype=None, specials=True):
    """A random problem. Boxes get their own dtype (any floating one, independent of
    the features'); with `specials`, one case in eight holds NaN / +-inf pixels."""
    op = draw(st.sampled_from(OPS) if op is None else op)
    dtype = draw(st.sampled_from(DTYPES) if dtype is None else dtype)
    box_dtype = draw(st.sampled_from(DTYPES) if box_dtype is None else box_dtype)
    N = draw(st.integers(1, 2))
    ph = draw(st.integers(1, 4))
    pw = draw(st.integers(1, 4))
    # Mostly 1-4 channels; one case in four takes 8, 16 or 24, which reach the CUDA
    # kernels' 16-channel groups and one-pack paths (gpu_launch.h: dispatch_channels).
    # The position-sensitive ops take 1-3 (sometimes 8, 16 or 17) channels per bin.
    if op in PS_OPS:
        C = ph * pw * (draw(st.integers(1, 3)) if draw(st.integers(0, 3)) else draw(st.sampled_from([8, 16, 17])))
    else:
        C = draw(st.integers(1, 4)) if draw(st.integers(0, 3)) else draw(st.sampled_from([8, 16, 24]))
    H = draw(st.integers(1, 10))
    W = draw(st.integers(1, 10))
    K = draw(st.integers(0, 5))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 1 / 3, 2.0]))
    rows = []
    for _ in range(K):
        b = draw(st.integers(0, N - 1))
        x1, y1, x2, y2 = (draw(coordinate) for _ in range(4))
        if draw(st.booleans()):  # mostly well-formed boxes, sometimes inverted
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
        rows.append(rotated_row(b, x1, y1, x2, y2, draw(angle)) if op == "roi_align_rotated" else [b, x1, y1, x2, y2])
    kwargs = op_kwargs(
        op,
        (ph, pw) if ph != pw else ph,
        scale,
        draw(st.sampled_from([-1, 0, 1, 2, 3, 4])),
        draw(st.booleans()),
        draw(st.sampled_from(["avg", "max"])),
        draw(st.sampled_from(["bilinear", "nearest"])),
        draw(st.booleans()),
    )
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(dtype)
    if specials and draw(st.integers(0, 7)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from(SPECIALS))
    cl = draw(st.booleans()) if channels_last is None else channels_last
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor(rows, dtype=torch.float64).reshape(K, 6 if op == "roi_align_rotated" else 5).to(box_dtype)
    return Case(op, x, rois, kwargs)


def reference_grads(case: Case, grad_out: torch.Tensor):
    """Reference (input, box) gradients; reduced feature dtypes go through float32,
    boxes keep their dtype (the geometry is float64 from their values either way)."""
    dt = torch.float32 if case.input.dtype in (torch.float16, torch.bfloat16) else case.input.dtype
    x = case.input.to(dt).requires_grad_()
    r = case.rois.clone().requires_grad_()
    out = case.run(reference, x, r)
    gx, gr = torch.autograd.grad(out, (x, r), grad_out.to(dt), allow_unused=True)
    return gx, torch.zeros_like(r) if gr is None else gr


def kernel_grads(case: Case, grad_out: torch.Tensor):
    x = case.input.clone().requires_grad_()
    r = case.rois.clone().requires_grad_()
    out = case.run(roiops, x, r)
    return torch.autograd.grad(out, (x, r), grad_out)
