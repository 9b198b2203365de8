"""Pure-PyTorch statement of the RoI op contract (docs/SEMANTICS.md).

This module is the oracle the tests and ``python -m roiops check`` compare the kernels
against. It is written to be read next to the contract, not to be fast: every RoI's
samples are materialised, and gradients (input, box, second order) come from
PyTorch's autograd through the same formulas. It is vectorised over RoIs, bins and
samples so that hundreds of small random cases run in seconds.

All geometry (box transform, bins, sample positions, taps and per-axis weights) is
computed in float64 from the box values, whatever the feature and box dtypes; only
the per-axis weights are rounded to the accumulation dtype. Boxes may have any
floating dtype, independent of the input's; their gradient comes back in their dtype.

Same signatures and results as ``roiops.roi_align`` / ``roi_warp`` / ``roi_pool`` /
``ps_roi_align`` / ``ps_roi_pool`` / ``prroi_pool`` (output in contiguous NCHW);
``roi_align_rotated`` states the contract of the rotated op.
The position-sensitive ops are stated as their plain op pooling every channel in every
bin, after which bin ``(ph, pw)`` keeps channel ``c * PH * PW + ph * PW + pw`` as
output channel ``c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import _validation as v

# Adaptive sampling grid cap per axis; csrc/roi_geometry.h: kMaxAdaptiveGrid.
MAX_ADAPTIVE_GRID = 64


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _round_half_away(x: Tensor) -> Tensor:
    """Round half away from zero, exactly (C's ``round``).

    ``sign(x) * floor(|x| + 0.5)`` is wrong just below a half: |x| + 0.5 rounds up to 1
    for x = 0.49999997 (float32) or 0.49999999999999994 (float64). ``x - trunc(x)`` is
    exact, so comparing it with 0.5 is too. Non-finite x stay non-finite (inf - inf is
    NaN, which compares false and keeps trunc(x) = x). The gradient is zero.
    """
    t = torch.trunc(x)
    return torch.where((x - t).abs() >= 0.5, t + torch.sign(x), t)


def _axis_taps(coord: Tensor, size: int, sampling: str):
    """Per-axis taps of float64 sample coordinates: (lo, hi, w_lo, w_hi, valid).

    Weights stay float64 here (the caller rounds them); nearest returns one index and
    no weights, as it reads exactly one pixel (a 0 weight times an inf pixel would be
    NaN). Requires size > 0.
    """
    valid = (coord >= -1) & (coord <= size)  # also false for NaN
    coord = torch.where(valid, coord, torch.zeros_like(coord))  # keep NaN out of indices
    coord = torch.where(coord < 0, torch.zeros_like(coord), coord)
    if sampling == "nearest":
        idx = torch.clamp(torch.floor(coord + 0.5), max=size - 1).long()
        return idx, idx, None, None, valid
    lo = torch.floor(coord).long()
    at_edge = lo >= size - 1
    lo = torch.where(at_edge, torch.full_like(lo, size - 1), lo)
    hi = torch.where(at_edge, lo, lo + 1)
    coord = torch.where(at_edge, lo.to(coord.dtype), coord)
    frac = coord - lo.to(coord.dtype)
    return lo, hi, 1 - frac, frac, valid


def _empty_map_output(x: Tensor, shape) -> Tensor:
    """Zeros of ``shape`` when there is nothing to pool: a map with no pixel (H, W or
    C == 0) or no RoI (K == 0, an empty output).

    Adding the sum of the map keeps the output on the input's autograd graph, so the
    input gradient exists and has the input's shape; the sum is exactly 0 for an empty
    map, and for K == 0 the output has no element to receive it.
    """
    return x.new_zeros(shape) + x.sum()


def _prologue(input: Tensor, rois: Tensor, output_size: tuple[int, int]):
    """``(x, acc, empty)``: the map in its accumulation dtype ``acc`` and, when there is
    nothing to pool (no pixel, channel or RoI), the op's output (``_empty_map_output``)
    as ``empty``, else None."""
    acc = _acc_dtype(input.dtype)
    x = input.to(acc)
    _, C, H, W = x.shape
    K = rois.shape[0]
    if H == 0 or W == 0 or K == 0 or C == 0:
        return x, acc, _empty_map_output(x, (K, C, *output_size)).to(input.dtype)
    return x, acc, None


def _reduce_max(vals: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    """Max over the last axis among the candidates ``mask``; 0 where ``count == 0``.

    A NaN candidate makes the result NaN (as torch.amax and max_pool2d do) and the
    gradient goes to the first NaN candidate; otherwise to the first maximal one. The
    index is chosen among the candidates explicitly: an argmax over a -inf-filled
    tensor would pick a non-candidate when every candidate is -inf. The value is then
    gathered, so autograd routes the gradient to that one sample.
    """
    mx = torch.where(mask, vals, torch.full_like(vals, float("-inf"))).amax(-1, keepdim=True)
    hit = mask & ((vals == mx) | (torch.isnan(vals) & torch.isnan(mx)))
    n = vals.shape[-1]
    pos = torch.arange(n, device=vals.device)
    first = torch.where(hit, pos, n).amin(-1, keepdim=True).clamp(max=n - 1)  # n: no hit
    out = torch.gather(vals, -1, first).squeeze(-1)
    return torch.where(count > 0, out, torch.zeros_like(out))


def _adaptive_grid(extent: Tensor, pooled: int, sampling_ratio: int, ok: Tensor) -> Tensor:
    """Samples per bin along one axis: sampling_ratio, or ceil(bin extent) capped at
    MAX_ADAPTIVE_GRID (0 for a non-positive or NaN extent); 0 where not ``ok``."""
    if sampling_ratio > 0:
        g = torch.full(extent.shape, sampling_ratio, dtype=torch.long, device=extent.device)
    else:
        g = torch.nan_to_num(torch.ceil(extent.detach() / pooled), nan=0.0)
        g = g.clamp(0, MAX_ADAPTIVE_GRID).long()
    return torch.where(ok, g, 0)


def _sample_coords(start: Tensor, bin_size: Tensor, g: Tensor, pooled: int, G: int) -> Tensor:
    """``start + p * bin + (i + 0.5) * bin / g`` for bin p and sample i of each RoI:
    [K, pooled, G] (csrc/roi_geometry.h: sample_coord, in its operation order, so ties
    agree bitwise)."""
    p = torch.arange(pooled, device=bin_size.device, dtype=torch.float64)[None, :, None]
    i = torch.arange(G, device=bin_size.device, dtype=torch.float64)[None, None, :]
    gs = g.clamp(min=1).to(torch.float64)[:, None, None]
    return start[:, None, None] + p * bin_size[:, None, None] + (i + 0.5) * bin_size[:, None, None] / gs


def _pool_samples(x: Tensor, batch: Tensor, ys: Tensor, xs: Tensor, gh: Tensor, gw: Tensor, mode: str,
                  sampling: str) -> Tensor:
    """Each bin's avg or max over its samples, at float64 coordinates ``ys`` / ``xs`` of
    shape [K, PH, Gy, PW, Gx] (or broadcastable to it: an axis-aligned RoI's rows do not
    depend on the column), with gh x gw of the Gy x Gx samples in each bin of RoI k;
    -> [K, C, PH, PW] in x's dtype (the accumulation dtype)."""
    K, PH, Gy = ys.shape[:3]
    PW, Gx = xs.shape[3:]
    H, W = x.shape[2:]
    ylo, yhi, wylo, wyhi, vy = _axis_taps(ys, H, sampling)
    xlo, xhi, wxlo, wxhi, vx = _axis_taps(xs, W, sampling)

    def at(yi, xi):  # -> [K, PH, Gy, PW, Gx, C]
        return x[batch[:, None, None, None, None], :, yi, xi]

    def outer(a, b):
        # Per-axis weights rounded to the accumulation dtype first, then multiplied in it.
        return (a.to(x.dtype) * b.to(x.dtype))[..., None]

    if sampling == "nearest":
        val = at(ylo, xlo)  # one pixel, no weight: +-inf and NaN pass through unchanged
    else:
        val = (
            outer(wylo, wxlo) * at(ylo, xlo)
            + outer(wylo, wxhi) * at(ylo, xhi)
            + outer(wyhi, wxlo) * at(yhi, xlo)
            + outer(wyhi, wxhi) * at(yhi, xhi)
        )
    iy = torch.arange(Gy, device=x.device)
    ix = torch.arange(Gx, device=x.device)
    in_grid = (iy[None, None, :, None, None] < gh[:, None, None, None, None]) & (
        ix[None, None, None, None, :] < gw[:, None, None, None, None]
    )  # [K, 1, Gy, 1, Gx]
    # Off-map samples read as 0 (still max candidates); samples beyond a RoI's grid are
    # padding of the [Gy, Gx] tensor and are excluded below.
    val = torch.where((in_grid & vy & vx)[..., None], val, torch.zeros_like(val))
    C = x.shape[1]
    val = val.expand(K, PH, Gy, PW, Gx, C).permute(0, 5, 1, 3, 2, 4).reshape(K, C, PH, PW, Gy * Gx)  # row-major
    count = (gh * gw)[:, None, None, None]
    if mode == "avg":
        return val.sum(-1) / count.clamp(min=1).to(x.dtype)
    grid_mask = in_grid.permute(0, 1, 3, 2, 4).reshape(K, 1, 1, 1, Gy * Gx)
    return _reduce_max(val, grid_mask, count)


def _sampled(input, rois, output_size, spatial_scale, sampling_ratio, aligned, quantize,
             mode, sampling):
    x, _, empty = _prologue(input, rois, output_size)
    if empty is not None:
        return empty
    PH, PW = output_size
    # Geometry in float64 whatever the box and feature dtypes (autograd carries the
    # box gradient back through .to() in the boxes' own dtype).
    r = rois.to(torch.float64)
    batch = r[:, 0].detach().long()

    c = r[:, 1:] * spatial_scale
    if quantize:
        c = _round_half_away(c)
    finite = torch.isfinite(c).all(dim=1)
    c = torch.where(finite[:, None], c, torch.zeros_like(c))
    off = 0.5 if aligned else 0.0
    x0, y0 = c[:, 0] - off, c[:, 1] - off
    rw, rh = (c[:, 2] - off) - x0, (c[:, 3] - off) - y0
    if not aligned:
        rw = torch.where(rw < 1, torch.ones_like(rw), rw)
        rh = torch.where(rh < 1, torch.ones_like(rh), rh)
    bw, bh = rw / PW, rh / PH
    ok = finite & torch.isfinite(bw) & torch.isfinite(bh)
    gh, gw = _adaptive_grid(rh, PH, sampling_ratio, ok), _adaptive_grid(rw, PW, sampling_ratio, ok)
    Gy, Gx = max(int(gh.max()), 1), max(int(gw.max()), 1)
    ys = _sample_coords(y0, bh, gh, PH, Gy)  # [K, PH, Gy]
    xs = _sample_coords(x0, bw, gw, PW, Gx)  # [K, PW, Gx]
    out = _pool_samples(x, batch, ys[:, :, :, None, None], xs[:, None, None], gh, gw, mode, sampling)
    return out.to(input.dtype)


def _pool(input, rois, output_size, spatial_scale, mode, position_sensitive=False):
    x, acc, empty = _prologue(input, rois, output_size)
    if empty is not None:
        return empty
    N, C, H, W = x.shape
    PH, PW = output_size
    K = rois.shape[0]
    batch = rois[:, 0].detach().long()
    # Bins in float64 from the box values, whatever the dtypes; no box gradient.
    c = _round_half_away(rois[:, 1:].detach().to(torch.float64) * spatial_scale)
    finite = torch.isfinite(c).all(dim=1)
    c = torch.where(finite[:, None], c, torch.zeros_like(c))

    def bins(start, end, pooled, size):
        # roi_pool: extent end - start + 1, bins clipped to [0, size]; ps_roi_pool
        # (torchvision's): extent end - start, bins clipped to [0, size - 1].
        extent = (end - start + (0 if position_sensitive else 1)).clamp(min=1)[:, None]
        limit = size - 1 if position_sensitive else size
        p = torch.arange(pooled, device=c.device, dtype=torch.float64)[None, :]
        b = (torch.floor(p * extent / pooled) + start[:, None]).clamp(0, limit)
        e = (torch.ceil((p + 1) * extent / pooled) + start[:, None]).clamp(0, limit)
        b = torch.where(finite[:, None], b, torch.zeros_like(b))
        e = torch.where(finite[:, None], e, torch.zeros_like(e))
        idx = torch.arange(size, device=c.device)[None, None, :]
        return (idx >= b[..., None]) & (idx < e[..., None])  # [K, pooled, size]

    rows = bins(c[:, 1], c[:, 3], PH, H)
    cols = bins(c[:, 0], c[:, 2], PW, W)
    mask = rows[:, :, None, :, None] & cols[:, None, :, None, :]  # [K, PH, PW, H, W]
    mask = mask.reshape(K, 1, PH, PW, H * W)
    vals = x[batch].reshape(K, C, 1, 1, H * W)
    count = mask.sum(-1)  # int64
    if mode == "avg":
        out = torch.where(mask, vals, torch.zeros_like(vals)).sum(-1) / count.clamp(min=1)
    else:
        out = _reduce_max(vals.expand(K, C, PH, PW, H * W), mask, count)
    return out.to(input.dtype)


def roi_align(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size,
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False,
              *, mode: str = "avg", sampling: str = "bilinear") -> Tensor:
    """Reference roi_align; see roiops.roi_align."""
    rois = v.rois_from_boxes("reference.roi_align", input, boxes)
    return _sampled(input, rois, v.output_size_pair("reference.roi_align", output_size),
                    spatial_scale, sampling_ratio, aligned, False, mode, sampling)


def roi_warp(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size,
             spatial_scale: float = 1.0, sampling_ratio: int = -1,
             *, mode: str = "max", sampling: str = "bilinear") -> Tensor:
    """Reference roi_warp; see roiops.roi_warp."""
    rois = v.rois_from_boxes("reference.roi_warp", input, boxes)
    return _sampled(input, rois, v.output_size_pair("reference.roi_warp", output_size),
                    spatial_scale, sampling_ratio, False, True, mode, sampling)


def roi_pool(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size,
             spatial_scale: float = 1.0, *, mode: str = "max") -> Tensor:
    """Reference roi_pool; see roiops.roi_pool."""
    rois = v.rois_from_boxes("reference.roi_pool", input, boxes)
    return _pool(input, rois, v.output_size_pair("reference.roi_pool", output_size),
                 spatial_scale, mode)


def _position_sensitive(full: Tensor) -> Tensor:
    """Output channel c of bin b = ph * PW + pw is channel c * PH * PW + b of ``full``,
    the plain op's ``[K, C, PH, PW]`` over every channel: ``[K, C / (PH * PW), PH, PW]``."""
    K, C, PH, PW = full.shape
    bins = PH * PW
    per_bin = full.reshape(K, C // bins, bins, bins)  # [k, c, channel's bin, pooled bin]
    return per_bin.diagonal(dim1=2, dim2=3).reshape(K, C // bins, PH, PW)


def ps_roi_align(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size,
                 spatial_scale: float = 1.0, sampling_ratio: int = -1) -> Tensor:
    """Reference ps_roi_align; see roiops.ps_roi_align: roi_align with aligned=True,
    avg, bilinear, then each bin's own channels."""
    rois = v.rois_from_boxes("reference.ps_roi_align", input, boxes)
    ph, pw = v.output_size_pair("reference.ps_roi_align", output_size)
    v.check_position_sensitive("reference.ps_roi_align", input, ph, pw)
    full = _sampled(input, rois, (ph, pw), spatial_scale, sampling_ratio, True, False, "avg", "bilinear")
    return _position_sensitive(full)


def ps_roi_pool(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size,
                spatial_scale: float = 1.0) -> Tensor:
    """Reference ps_roi_pool; see roiops.ps_roi_pool: torchvision's PS bins, avg, then
    each bin's own channels."""
    rois = v.rois_from_boxes("reference.ps_roi_pool", input, boxes)
    ph, pw = v.output_size_pair("reference.ps_roi_pool", output_size)
    v.check_position_sensitive("reference.ps_roi_pool", input, ph, pw)
    return _position_sensitive(_pool(input, rois, (ph, pw), spatial_scale, "avg", position_sensitive=True))


def roi_align_rotated(input: Tensor, rois: Tensor | Sequence[Tensor], output_size,
                      spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = True,
                      clockwise: bool = False) -> Tensor:
    """Reference rotated RoIAlign (detectron2's ``ROIAlignRotated``, mmcv's
    ``roi_align_rotated``), stated in docs/SEMANTICS.md ("The rest of the family"):
    ``rois`` rows ``(batch_index, cx, cy, w, h, angle)``, angle in degrees
    counter-clockwise (``clockwise=True`` negates it), or a list of ``[L_i, 5]``; each
    bin is the mean of its gh x gw bilinear samples (roi_align's point rule), taken on
    the box's own grid and rotated about its centre. At angle 0 it is roi_align on
    ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``."""
    op = "reference.roi_align_rotated"
    rois = v.rois_from_boxes(op, input, rois, v.ROTATED_FIELDS)
    PH, PW = v.output_size_pair(op, output_size)
    x, _, empty = _prologue(input, rois, (PH, PW))
    if empty is not None:
        return empty
    r = rois.to(torch.float64)
    batch = r[:, 0].detach().long()
    finite = torch.isfinite(r[:, 1:]).all(dim=1)
    r = torch.where(finite[:, None], r, torch.zeros_like(r))
    off = 0.5 if aligned else 0.0
    cx, cy = r[:, 1] * spatial_scale - off, r[:, 2] * spatial_scale - off
    rw, rh = r[:, 3] * spatial_scale, r[:, 4] * spatial_scale
    if not aligned:
        rw = torch.where(rw < 1, torch.ones_like(rw), rw)
        rh = torch.where(rh < 1, torch.ones_like(rh), rh)
    theta = torch.fmod(r[:, 5], 360.0) * (torch.pi / 180.0)  # exact reduction first
    if clockwise:
        theta = -theta
    bw, bh = rw / PW, rh / PH
    ok = finite & torch.isfinite(bw) & torch.isfinite(bh)
    gh, gw = _adaptive_grid(rh, PH, sampling_ratio, ok), _adaptive_grid(rw, PW, sampling_ratio, ok)
    Gy, Gx = max(int(gh.max()), 1), max(int(gw.max()), 1)
    # Sample positions relative to the centre in the box's frame, then rotated.
    yy = _sample_coords(-rh / 2, bh, gh, PH, Gy)[:, :, :, None, None]  # [K, PH, Gy, 1, 1]
    xx = _sample_coords(-rw / 2, bw, gw, PW, Gx)[:, None, None]  # [K, 1, 1, PW, Gx]
    # The C library's cos and sin, which the kernels call (torch's may differ in the last
    # bit, and a sample on a pixel border must land on the same side), differentiated as torch's.
    def libm(f, g):
        exact = torch.tensor([g(t) for t in theta.tolist()], dtype=torch.float64, device=theta.device)
        return (exact + (f(theta) - f(theta).detach()))[:, None, None, None, None]

    cos, sin = libm(torch.cos, math.cos), libm(torch.sin, math.sin)
    ys = yy * cos - xx * sin + cy[:, None, None, None, None]
    xs = yy * sin + xx * cos + cx[:, None, None, None, None]
    return _pool_samples(x, batch, ys, xs, gh, gw, "avg", "bilinear").to(input.dtype)


def _precise_weights(start: Tensor, end: Tensor, pooled: int, size: int) -> tuple[Tensor, Tensor]:
    """prroi_pool's weights along one axis, ``[K, pooled, size]`` in float64: pixel i's
    weight in bin p is the mean over the bin ``[lo, hi]`` of ``max(0, 1 - |t - i|)``, as
    csrc/roi_geometry.h: precise_weight computes it (on each linear piece of the hat, the
    covered fraction of the bin times the hat at the covered part's midpoint: exact, and
    differentiable by autograd in the box coordinates). Also which pixels each bin reads
    (``[floor(lo), ceil(hi)]``, for bins of positive size), as csrc/roi_geometry.h:
    precise_bin: a NaN or inf pixel outside them must not reach the sum as 0 * NaN."""
    bin_size = (end - start).clamp(min=0) / pooled
    valid = bin_size > 0
    bin_size = torch.where(valid, bin_size, torch.ones_like(bin_size))[:, None, None]
    p = torch.arange(pooled, device=start.device, dtype=torch.float64)[None, :, None]
    i = torch.arange(size, device=start.device, dtype=torch.float64)[None, None, :]
    lo = start[:, None, None] + p * bin_size
    hi = start[:, None, None] + (p + 1) * bin_size
    u = lo - i  # bin start relative to pixel i

    def before(t: float) -> Tensor:
        return ((t - u) / bin_size).clamp(0, 1)

    f0, f1, f2 = before(-1.0), before(0.0), before(1.0)
    rising = (f1 - f0) * (1 + (u + bin_size * 0.5 * (f0 + f1)))
    falling = (f2 - f1) * (1 - (u + bin_size * 0.5 * (f1 + f2)))
    reads = valid[:, None, None] & (i >= torch.floor(lo.detach())) & (i <= torch.ceil(hi.detach()))
    return torch.where(reads, rising + falling, torch.zeros_like(u)), reads


def prroi_pool(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size,
               spatial_scale: float = 1.0) -> Tensor:
    """Reference prroi_pool; see roiops.prroi_pool: per bin, sum_ij v[i, j] * wy[i] * wx[j]
    over the pixels the bin reads, with the exact per-axis hat integrals of
    _precise_weights (float64, rounded to the accumulation dtype, multiplied in it).
    Differentiable by autograd in the input and the boxes."""
    rois = v.rois_from_boxes("reference.prroi_pool", input, boxes)
    PH, PW = v.output_size_pair("reference.prroi_pool", output_size)
    x, acc, empty = _prologue(input, rois, (PH, PW))
    if empty is not None:
        return empty
    H, W = x.shape[2], x.shape[3]
    r = rois.to(torch.float64)
    batch = r[:, 0].detach().long()
    c = r[:, 1:] * spatial_scale
    finite = torch.isfinite(c).all(dim=1)
    # A non-finite box becomes (0, 0, 0, 0): no bin has an area.
    c = torch.where(finite[:, None], c, torch.zeros_like(c))
    wy, ry = _precise_weights(c[:, 1], c[:, 3], PH, H)  # [K, PH, H]
    wx, rx = _precise_weights(c[:, 0], c[:, 2], PW, W)  # [K, PW, W]
    weight = wy.to(acc)[:, :, None, :, None] * wx.to(acc)[:, None, :, None, :]  # [K, PH, PW, H, W]
    reads = ry[:, :, None, :, None] & rx[:, None, :, None, :]
    terms = weight[:, None] * x[batch][:, :, None, None]  # [K, C, PH, PW, H, W]
    terms = torch.where(reads[:, None], terms, torch.zeros_like(terms))
    return terms.sum((-2, -1)).to(input.dtype)


def multilevel(op: str, features: Sequence[Tensor], rois: Tensor, levels: Tensor,
               scales: Sequence[float], output_size, **kwargs) -> Tensor:
    """Reference of the fused ``<op>_multilevel`` ops: RoI k pooled by ``op`` from
    ``features[levels[k]]`` at ``scales[levels[k]]``; ``kwargs`` as for the op."""
    fn = {"roi_align": roi_align, "roi_warp": roi_warp, "roi_pool": roi_pool}[op]
    ph, pw = v.output_size_pair(f"reference.{op}_multilevel", output_size)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], ph, pw))
    for level, (x, scale) in enumerate(zip(features, scales, strict=True)):
        picked = levels == level
        out = out.index_put((picked.nonzero()[:, 0],), fn(x, rois[picked], (ph, pw), scale, **kwargs))
    return out
