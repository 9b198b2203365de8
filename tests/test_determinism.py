"""Backward is bitwise reproducible, across repeats and thread counts, and
torch.use_deterministic_algorithms(True) neither errors nor changes the path."""

import pytest
import torch
from cpu_tuning import TUNING, tier_counts

import roiops

torch.manual_seed(0)
N, C, H, W, K = 2, 80, 24, 30, 200
XY = torch.rand(K, 2) * torch.tensor([W * 8.0, H * 8.0])
ROIS = torch.cat([torch.randint(0, N, (K, 1)).float(), XY, XY + torch.rand(K, 2) * 120 + 1], 1)


def rotated(r):
    """Corner boxes as roi_align_rotated's (batch, cx, cy, w, h, angle), turned by an angle
    that follows the box (not its position: the tests permute the boxes)."""
    angle = r[:, 1:2] * 37 % 360 - 180
    return torch.cat([r[:, :1], (r[:, 1:3] + r[:, 3:5]) / 2, r[:, 3:5] - r[:, 1:3], angle], 1)


CALLS = {
    "roi_align": lambda x, r: roiops.roi_align(x, r, 7, 1 / 8, 2, True),
    "roi_align_max": lambda x, r: roiops.roi_align(x, r, 7, 1 / 8, -1, mode="max"),
    "roi_warp": lambda x, r: roiops.roi_warp(x, r, 7, 1 / 8, 2, mode="avg"),
    "roi_pool": lambda x, r: roiops.roi_pool(x, r, 7, 1 / 8),
    "prroi_pool": lambda x, r: roiops.prroi_pool(x, r, 7, 1 / 8),
    "roi_align_rotated": lambda x, r: roiops.roi_align_rotated(x, rotated(r), 7, 1 / 8, 2),
}
# The position-sensitive ops on the same 80 channels: 5 per bin of 4 x 4, 8 per bin of 2 x 5.
PS_CALLS = {
    "ps_roi_align": lambda x, r: roiops.ps_roi_align(x, r, 4, 1 / 8, 2),
    "ps_roi_pool": lambda x, r: roiops.ps_roi_pool(x, r, (2, 5), 1 / 8),
}
EVERY_CALL = {**CALLS, **PS_CALLS}


def grads(fn, channels_last, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, C, H, W, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.detach().requires_grad_()
    r = ROIS.to(dtype).detach().requires_grad_()
    out = fn(x, r)
    out.backward(torch.randn(out.shape, generator=gen).to(dtype))
    return out.detach(), x.grad, r.grad


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(EVERY_CALL))
def test_bitwise_identical_across_runs_and_thread_counts(name, channels_last):
    fn = EVERY_CALL[name]
    threads = torch.get_num_threads()
    try:
        runs = []
        for t in (1, 2, 1, 2):
            torch.set_num_threads(t)
            runs.append(grads(fn, channels_last))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(EVERY_CALL))
def test_deterministic_mode_is_supported(name, dtype):
    fn = EVERY_CALL[name]
    free = grads(fn, True, dtype)
    torch.use_deterministic_algorithms(True)
    try:
        det = [grads(fn, True, dtype) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    for run in det:
        for a, b in zip(free, run, strict=True):
            assert torch.equal(a, b)


# Planar (NCHW) input gradients are accumulated 64 channels at a time in a
# channels-last scratch that holds 5120 float32 pixels (2560 float64): larger maps
# are split into windows of rows, wider ones into windows of columns as well. The
# scratch is written out to the planes in 8 x 8 blocks of pixels x channels.
WINDOW_SPLITS = {
    "one-window": (24, 30),
    "row-windows": (90, 70),
    "column-windows": (3, 6000),
}


def assert_layouts_agree(fn, size, dtype, channels, rois, out_channels, pooled):
    """fn's output and input gradient are the same bits from an NCHW map and from a
    channels_last one (the gradient in each map's layout), on `rois` boxes drawn over
    a map of `size` at stride 8 on two images."""
    h, w = size
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, channels, h, w, generator=gen, dtype=dtype)
    xy = torch.rand(rois, 2, generator=gen) * torch.tensor([w * 8.0, h * 8.0])
    wh = torch.rand(rois, 2, generator=gen) * torch.tensor([min(w, 200) * 8.0, h * 8.0]) + 1
    boxes = torch.cat([torch.randint(0, 2, (rois, 1), generator=gen).float(), xy, xy + wh], 1)
    go = torch.randn(rois, out_channels, pooled, pooled, generator=gen, dtype=dtype)
    got = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xg = x.clone(memory_format=memory_format).requires_grad_()
        out = fn(xg, boxes.to(dtype))
        out.backward(go)
        got.append((out.detach(), xg.grad))
    assert got[0][1].is_contiguous() and got[1][1].is_contiguous(memory_format=torch.channels_last)
    assert got[0][1].abs().sum() > 0
    for a, b in zip(got[0], got[1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", list(WINDOW_SPLITS.values()), ids=list(WINDOW_SPLITS))
@pytest.mark.parametrize("name", list(CALLS))
def test_nchw_and_channels_last_give_the_same_bits(name, size, dtype):
    """Both layouts sum every pixel's contributions in the same order (RoI, bin,
    sample, tap), however the planar scratch is split. 70 channels: a full block and a
    partial one (8-channel runs, then 6 left)."""
    assert_layouts_agree(CALLS[name], size, dtype, channels=70, rois=60, out_channels=70, pooled=7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", list(WINDOW_SPLITS.values()), ids=list(WINDOW_SPLITS))
@pytest.mark.parametrize("name", list(PS_CALLS))
def test_position_sensitive_nchw_and_channels_last_give_the_same_bits(name, size, dtype):
    """The planar scratch holds each bin's channels as one run and is written out bin
    by bin to planes PH * PW apart; channels-last gradients add at that stride in
    place. Both sum in the same order, however the scratch is split. 280 channels at 2 x
    2 bins: 70 output channels, a full block and a partial one."""
    fn = {"ps_roi_align": lambda x, r: roiops.ps_roi_align(x, r, 2, 1 / 8, 2),
          "ps_roi_pool": lambda x, r: roiops.ps_roi_pool(x, r, 2, 1 / 8)}[name]
    assert_layouts_agree(fn, size, dtype, channels=280, rois=30, out_channels=70, pooled=2)


# Planar forwards read a RoI's pixels from a channels-last copy: of a channel block's
# whole plane when the image's RoIs would gather more pixels than it has (blocks of 64
# channels while that plane fits plane_bytes, else of 16), else of the RoI's own
# footprint; float copies move 8 x 8 blocks of channels x consecutive columns. 37
# channels: blocks of 16, 16 and 5, or one of 37 (four 8-channel runs and 5 left). Each
# case is named by the tier counter it reaches (tests/test_cpu_tiers.py); the
# 16-channel one has 1.5x the pixels whose 64 float32 channels fill plane_bytes, which
# 16 float64 channels still fit, and enough RoIs on each of its 2 images.
_NARROW_PIXELS = TUNING["plane_bytes"] // (TUNING["channel_block"] * 4) * 3 // 2
PLANE_TIERS = {
    "plane_blocks": ((40, 50), 60),
    "narrow_plane_blocks": ((_NARROW_PIXELS // 256, 256), 5 * _NARROW_PIXELS // (2 * TUNING["plane_roi_pixels"])),
    "roi_tiles": ((100, 120), 10),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tier", list(PLANE_TIERS))
@pytest.mark.parametrize("name", ["roi_align", "roi_align_max", "roi_warp", "prroi_pool", "roi_align_rotated"])
def test_planar_forward_copies_give_channels_last_bits(name, tier, dtype):
    (h, w), k = PLANE_TIERS[tier]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 37, h, w, generator=gen, dtype=dtype)
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([w * 8.0, h * 8.0])
    # From a few pixels (consecutive tile columns) to the whole map (sparse ones).
    wh = torch.rand(k, 2, generator=gen) ** 2 * torch.tensor([w * 8.0, h * 8.0]) + 1
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=gen).float(), xy, xy + wh], 1).to(dtype)
    go = torch.randn(k, 37, 7, 7, generator=gen, dtype=dtype)
    got = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xg = x.clone(memory_format=memory_format).requires_grad_()
        with tier_counts() as counts:
            out = CALLS[name](xg, rois)
        out.backward(go)  # max mode: the gradient follows each layout's argmax
        got.append((out.detach(), xg.grad))
        assert (counts[tier] > 0) == (memory_format == torch.contiguous_format), counts
    assert got[0][0].abs().sum() > 0
    for a, b in zip(got[0], got[1], strict=True):
        assert torch.equal(a, b)


# The forward pools each image's RoIs top to bottom, whatever order the caller gives
# them in; boxes whose vertical centre is NaN (a NaN edge, or edges at opposite
# infinities) must neither upset that sort nor move any other RoI's result.
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("tier", list(PLANE_TIERS))
@pytest.mark.parametrize("name", list(CALLS))
def test_forward_results_do_not_depend_on_roi_order(name, tier, channels_last):
    (h, w), k = PLANE_TIERS[tier]
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 37, h, w, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([w * 8.0, h * 8.0])
    wh = torch.rand(k, 2, generator=gen) ** 2 * torch.tensor([w * 8.0, h * 8.0]) + 1
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=gen).float(), xy, xy + wh], 1)
    rois[1, 2] = float("nan")
    rois[2, 2], rois[2, 4] = float("-inf"), float("inf")
    rois[3] = rois[4]  # equal centres
    out = CALLS[name](x, rois)
    perm = torch.randperm(k, generator=gen)
    assert out.abs().sum() > 0 and torch.equal(out[1:3], torch.zeros_like(out[1:3]))
    assert torch.equal(CALLS[name](x, rois[perm]), out[perm])


# A forward task writes its channels of every bin of one RoI. For NCHW outputs that
# block is staged and written out in runs when it holds at most 16384 elements, and
# stored in place otherwise: with 80 channels (tasks of 64 and 16) and 30 x 30 bins,
# one call goes both ways (64 * 900 elements in place, 16 * 900 staged).
LARGE_OUTPUT_CALLS = {
    "roi_align": lambda x, r: roiops.roi_align(x, r, 30, 1 / 8, 2, True),
    "roi_align_max": lambda x, r: roiops.roi_align(x, r, 30, 1 / 8, 2, mode="max"),
    "roi_pool": lambda x, r: roiops.roi_pool(x, r, 30, 1 / 8),
}


@pytest.mark.parametrize("name", list(LARGE_OUTPUT_CALLS))
def test_staged_and_in_place_nchw_outputs_match_channels_last(name):
    fn = LARGE_OUTPUT_CALLS[name]
    nchw = grads(fn, channels_last=False)
    channels_last = grads(fn, channels_last=True)
    assert nchw[0].shape[1:] == (C, 30, 30) and nchw[0].is_contiguous()
    for a, b in zip(nchw, channels_last, strict=True):
        assert torch.equal(a, b)


# A backward reads the output gradient and the argmax one RoI's channel block at a
# time: NCHW float32 / int32 blocks are transposed whole into bin-major runs, others
# read bin by bin. A padded (non-contiguous) copy takes the second way.
INTERNAL_BACKWARDS = {
    "roi_pool": ("roi_pool", ("max",)),
    "roi_pool_avg": ("roi_pool", ("avg",)),
    "roi_align_max": ("roi_align", (2, True, "max", "bilinear")),
    "roi_warp": ("roi_warp", (2, "avg", "bilinear")),
}


@pytest.mark.parametrize("name", list(INTERNAL_BACKWARDS))
def test_staged_and_bin_by_bin_gradient_reads_give_the_same_bits(name):
    op, params = INTERNAL_BACKWARDS[name]
    ops = torch.ops.roiops
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(N, C, H, W, generator=gen)
    out, argmax = getattr(ops, op)(x, ROIS, 1 / 8, 7, 7, *params)
    go = torch.randn(out.shape, generator=gen)

    def padded(t):  # same values, each bin row one element wider in memory
        if t.dim() != 4:  # avg mode's empty argmax
            return t
        wide = torch.zeros(*t.shape[:3], t.shape[3] + 1, dtype=t.dtype)
        wide[..., :-1] = t
        return wide[..., :-1]

    backward = getattr(ops, f"_{op}_backward")
    staged = backward(go, x, argmax, ROIS, 1 / 8, 7, 7, *params)
    by_bin = backward(padded(go), x, padded(argmax), ROIS, 1 / 8, 7, 7, *params)
    assert staged.abs().sum() > 0
    assert torch.equal(staged, by_bin)


# Forward outputs larger than the cache they could stay in (the last-level cache, at
# most 32 MB) are written around it (non-temporal stores of whole channel runs or
# planes); smaller ones are stored as usual. Pooling the same RoIs in one call above
# that size and in eight calls below it gives the same bits. 37 channels: runs that
# start and end inside 16-byte units.
AROUND_CACHE_OPS = {
    "roi_align": ("roi_align", (2, True, "avg", "bilinear")),
    "roi_align_max": ("roi_align", (2, True, "max", "bilinear")),
    "roi_pool": ("roi_pool", ("max",)),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(AROUND_CACHE_OPS))
def test_outputs_written_around_the_cache_match_small_calls(name, channels_last):
    op, params = AROUND_CACHE_OPS[name]
    fn = getattr(torch.ops.roiops, op)
    gen = torch.Generator().manual_seed(5)
    c, h, w = 37, 20, 24
    assert 0 < TUNING["streamed_output_bytes"] <= 32 << 20
    k = TUNING["streamed_output_bytes"] // (c * 49 * 4) + 64
    x = torch.randn(1, c, h, w, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([w * 8.0, h * 8.0])
    rois = torch.cat([torch.zeros(k, 1), xy, xy + torch.rand(k, 2, generator=gen) * 80 + 1], 1)
    whole = fn(x, rois, 1 / 8, 7, 7, *params)
    parts = [fn(x, r, 1 / 8, 7, 7, *params) for r in rois.tensor_split(8)]
    assert whole[0].abs().sum() > 0
    for i, got in enumerate(whole):
        if got.dim() == 4:  # avg mode's argmax is empty
            assert torch.equal(got, torch.cat([p[i] for p in parts]))


# Position-sensitive planar forwards copy a block's n * PH * PW planes bin-major (each
# bin's n channels one run) when the image's RoIs would read more pixels than the
# planes hold, and otherwise read the map in place (no per-RoI tiles).
# Plane blocks are 64 or 16 channels wide, whichever fits (float64 planes take 16 here).
PS_PLANE_TIERS = {"plane_copies": (("plane_blocks", "narrow_plane_blocks"), (40, 50), 60),
                  "planar_in_place": (("planar_in_place",), (100, 120), 10)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tier", list(PS_PLANE_TIERS))
@pytest.mark.parametrize("name", list(PS_CALLS))
def test_position_sensitive_planar_forward_gives_channels_last_bits(name, tier, dtype):
    counters, (h, w), k = PS_PLANE_TIERS[tier]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 80, h, w, generator=gen, dtype=dtype)  # 80 = 5 x 16 = 8 x 10 channels
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([w * 8.0, h * 8.0])
    wh = torch.rand(k, 2, generator=gen) ** 2 * torch.tensor([w * 8.0, h * 8.0]) + 1
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=gen).float(), xy, xy + wh], 1).to(dtype)
    got = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        with tier_counts() as counts:
            got.append(PS_CALLS[name](x.clone(memory_format=memory_format), rois))
        reached = sum(counts.get(c, 0) for c in counters) > 0
        assert reached == (memory_format == torch.contiguous_format), counts
    assert got[0].abs().sum() > 0
    assert torch.equal(got[0], got[1])
