"""Pure-PyTorch statement of the RoI op contract (shared/design/SEMANTICS.md).

This module is the oracle the tests and ``python -m roiops check`` compare the kernels
against. It is written to be read next to the contract, not to be fast: every RoI's
samples are materialised, and gradients (input, box, second order) come from
PyTorch's autograd through the same formulas. It is vectorised over RoIs, bins and
samples so that hundreds of small random cases run in seconds.

Same signatures and results as ``roiops.roi_align`` / ``roi_warp`` / ``roi_pool``
(output in contiguous NCHW).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _validation as v

# Adaptive sampling grid cap per axis; csrc/roi_geometry.h: kMaxAdaptiveGrid.
MAX_ADAPTIVE_GRID = 64


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _round_half_away(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _axis_taps(coord: Tensor, size: int, sampling: str):
    """Per-axis taps of sample coordinates: (lo, hi, w_lo, w_hi, valid)."""
    valid = (coord >= -1) & (coord <= size) & (size > 0)
    coord = torch.where(valid, coord, torch.zeros_like(coord))  # keep NaN out of indices
    coord = torch.where(coord < 0, torch.zeros_like(coord), coord)
    if sampling == "nearest":
        idx = torch.clamp(torch.floor(coord + 0.5), max=max(size - 1, 0)).long()
        one = torch.ones_like(coord)
        return idx, idx, one, torch.zeros_like(coord), valid
    lo = torch.floor(coord).long()
    at_edge = lo >= size - 1
    lo = torch.where(at_edge, torch.full_like(lo, max(size - 1, 0)), lo)
    hi = torch.where(at_edge, lo, lo + 1)
    coord = torch.where(at_edge, lo.to(coord.dtype), coord)
    frac = coord - lo.to(coord.dtype)
    return lo, hi, 1 - frac, frac, valid


def _sampled(input, rois, output_size, spatial_scale, sampling_ratio, aligned, quantize,
             mode, sampling):
    acc = _acc_dtype(input.dtype)
    x = input.to(acc)
    r = rois.to(acc)
    N, C, H, W = x.shape
    PH, PW = output_size
    K = r.shape[0]
    batch = r[:, 0].long()

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

    def grid(extent: Tensor, pooled: int) -> Tensor:
        if sampling_ratio > 0:
            g = torch.full((K,), sampling_ratio, dtype=torch.long, device=r.device)
        else:
            g = torch.nan_to_num(torch.ceil(extent / pooled), nan=0.0)
            g = g.clamp(0, MAX_ADAPTIVE_GRID).long()
        return torch.where(finite & torch.isfinite(bw) & torch.isfinite(bh), g, 0)

    gh, gw = grid(rh, PH), grid(rw, PW)
    Gy, Gx = max(int(gh.max()) if K else 0, 1), max(int(gw.max()) if K else 0, 1)

    def coords(start, bin_size, g, pooled, G):
        p = torch.arange(pooled, device=r.device, dtype=acc)[None, :, None]
        i = torch.arange(G, device=r.device, dtype=acc)[None, None, :]
        gs = g.clamp(min=1).to(acc)[:, None, None]
        return start[:, None, None] + p * bin_size[:, None, None] + (i + 0.5) * bin_size[:, None, None] / gs

    ylo, yhi, wylo, wyhi, vy = _axis_taps(coords(y0, bh, gh, PH, Gy), H, sampling)  # [K, PH, Gy]
    xlo, xhi, wxlo, wxhi, vx = _axis_taps(coords(x0, bw, gw, PW, Gx), W, sampling)  # [K, PW, Gx]

    # Gather to [K, PH, Gy, PW, Gx, C].
    def at(yi, xi):
        return x[batch[:, None, None, None, None], :, yi[:, :, :, None, None], xi[:, None, None, :, :]]

    def outer(a, b):
        return a[:, :, :, None, None] * b[:, None, None, :, :]

    val = (
        outer(wylo, wxlo)[..., None] * at(ylo, xlo)
        + outer(wylo, wxhi)[..., None] * at(ylo, xhi)
        + outer(wyhi, wxlo)[..., None] * at(yhi, xlo)
        + outer(wyhi, wxhi)[..., None] * at(yhi, xhi)
    )
    iy = torch.arange(Gy, device=r.device)
    ix = torch.arange(Gx, device=r.device)
    in_grid = (iy[None, None, :, None, None] < gh[:, None, None, None, None]) & (
        ix[None, None, None, None, :] < gw[:, None, None, None, None]
    )  # [K, 1, Gy, 1, Gx]
    on_map = vy[:, :, :, None, None] & vx[:, None, None, :, :]
    val = torch.where((in_grid & on_map)[..., None], val, torch.zeros_like(val))

    val = val.permute(0, 5, 1, 3, 2, 4).reshape(K, C, PH, PW, Gy * Gx)  # samples row-major
    count = (gh * gw)[:, None, None, None]
    if mode == "avg":
        out = val.sum(-1) / count.clamp(min=1).to(acc)
    else:
        grid_mask = in_grid.permute(0, 1, 3, 2, 4).reshape(K, 1, 1, 1, Gy * Gx)
        masked = torch.where(grid_mask, val, torch.full_like(val, float("-inf")))
        first = masked.argmax(dim=-1, keepdim=True)  # first maximal sample
        out = torch.gather(val, -1, first).squeeze(-1)
        out = torch.where(count > 0, out, torch.zeros_like(out))
    return out.to(input.dtype)


def _pool(input, rois, output_size, spatial_scale, mode):
    acc = _acc_dtype(input.dtype)
    x = input.to(acc)
    N, C, H, W = x.shape
    PH, PW = output_size
    K = rois.shape[0]
    batch = rois[:, 0].long()
    c = _round_half_away(rois[:, 1:].detach().double() * spatial_scale)
    finite = torch.isfinite(c).all(dim=1)
    c = torch.where(finite[:, None], c, torch.zeros_like(c))

    def bins(start, end, pooled, size):
        extent = (end - start + 1).clamp(min=1)[:, None]
        p = torch.arange(pooled, device=c.device, dtype=torch.float64)[None, :]
        b = (torch.floor(p * extent / pooled) + start[:, None]).clamp(0, size)
        e = (torch.ceil((p + 1) * extent / pooled) + start[:, None]).clamp(0, size)
        b = torch.where(finite[:, None], b, torch.zeros_like(b))
        e = torch.where(finite[:, None], e, torch.zeros_like(e))
        idx = torch.arange(size, device=c.device)[None, None, :]
        return (idx >= b[..., None]) & (idx < e[..., None])  # [K, pooled, size]

    rows = bins(c[:, 1], c[:, 3], PH, H)
    cols = bins(c[:, 0], c[:, 2], PW, W)
    mask = rows[:, :, None, :, None] & cols[:, None, :, None, :]  # [K, PH, PW, H, W]
    mask = mask.reshape(K, 1, PH, PW, H * W)
    vals = x[batch].reshape(K, C, 1, 1, H * W)
    count = mask.sum(-1)
    if mode == "avg":
        out = torch.where(mask, vals, torch.zeros_like(vals)).sum(-1) / count.clamp(min=1)
    else:
        masked = torch.where(mask, vals, torch.full_like(vals, float("-inf")))
        first = masked.argmax(dim=-1, keepdim=True)
        out = torch.gather(vals.expand_as(masked), -1, first).squeeze(-1)
        out = torch.where(count > 0, out, torch.zeros_like(out))
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
