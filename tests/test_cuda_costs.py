"""The CUDA kernels' cost model, checked through the emulator's counters
(roiops._C.emulator_costs): the forward reads each sample's four map taps with at
most one table load per sample, and the input gradient visits only the RoIs listed
for its pixel's tile, merged with its group's wide RoIs, and still agrees with the CPU
kernels whichever list a RoI is on. The counters are compiled only into the emulator."""

import math

import pytest
import torch

from roiops import _C

pytestmark = pytest.mark.cuda_emulated

CPU = torch.ops.roiops
EMULATED = torch.ops.roiops_emulated
TILE = _C.EMULATOR_TILE
GROUP = _C.EMULATOR_CHANNEL_GROUP
MAX_TILES = _C.EMULATOR_MAX_TILES_PER_ROI
STRIP = _C.EMULATOR_STRIP_PIXELS
LIST_CHUNK = _C.EMULATOR_LIST_CHUNK


def counted(fn):
    _C.emulator_costs(True)
    try:
        result = fn()
    finally:
        kernels = _C.emulator_costs(False)
    return result, kernels


def params(op, mode):
    return [7, 7, 2, True, mode, "bilinear"] if op == "roi_align" else [7, 7, mode]


def tiles_covered(x0, y0, x1, y1):
    """Tiles a footprint of pixel columns x0..x1 and rows y0..y1 covers."""
    return (y1 // TILE - y0 // TILE + 1) * (x1 // TILE - x0 // TILE + 1)


# A square footprint of this many pixels covers more than MAX_TILES tiles.
WIDE_SIDE = TILE * (math.isqrt(MAX_TILES) + 2)


def boxes(H, W):
    """RoIs on one tile, across several, and wider than MAX_TILES tiles (a group's
    wide list), on two images, in no particular order."""
    side = WIDE_SIDE
    assert side < min(H, W)
    rois = torch.tensor([
        [0, 1.0, 1.0, TILE - 2.0, TILE - 2.0],
        [1, 3.5, 2.25, 3 * TILE + 0.5, 2 * TILE + 1.0],
        [0, 2.0, 3.0, side + 2.0, side + 3.0],
        [1, W - 3 * TILE - 0.5, H - 2 * TILE, W - 1.0, H - 1.0],
        [0, 5.0, TILE + 1.0, W - 2.0, H - 3.0],
        [1, 0.0, 0.0, W - 1.0, H - 1.0],
        [0, TILE * 3.3, TILE * 2.6, TILE * 5.1, TILE * 9.7],
    ])
    x = rois[:, 1:].floor().long().tolist()
    covered = [tiles_covered(max(a, 0), max(b, 0), min(c + 1, W - 1), min(d + 1, H - 1)) for a, b, c, d in x]
    assert min(covered) == 1 and max(covered) > MAX_TILES and any(1 < c <= MAX_TILES for c in covered)
    return rois


@pytest.mark.parametrize("channels", [4, GROUP])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("op,mode", [("roi_align", "avg"), ("roi_align", "max"), ("roi_pool", "max"),
                                     ("roi_pool", "avg")])
def test_binned_input_gradient_agrees_on_tile_and_wide_lists(op, mode, channels_last, channels):
    H, W = WIDE_SIDE + 2 * TILE + 3, WIDE_SIDE + 4 * TILE + 5
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, H, W, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = boxes(H, W).double()
    p = params(op, mode)
    out, arg = getattr(CPU, op)(x, rois, 1.0, *p, True)
    grad = torch.empty_like(out).copy_(torch.randn(out.shape, generator=gen, dtype=torch.float64))  # out's layout
    gx, kernels = counted(lambda: getattr(EMULATED, f"_{op}_backward")(grad, x, arg, rois, 1.0, *p))
    expected = getattr(CPU, f"_{op}_backward")(grad, x, arg, rois, 1.0, *p)
    torch.testing.assert_close(gx, expected, rtol=1e-12, atol=1e-12)
    # Both passes of the list building ran, and every pixel looked at fewer RoIs than
    # its image holds (binning), though each useful RoI was seen.
    assert {"list_rois_count", "list_rois_fill"} <= kernels.keys()
    name = "sampled_backward_input" if op == "roi_align" else "pool_backward_input"
    k = kernels[name]
    assert 0 < k["roi_useful"] <= k["roi_footprint"] <= k["roi_visits"] < k["threads"] * 4
    # The channels per thread: a group of GROUP channels when C allows, else one
    # 16-byte pack of channels_last float64 (2), else one channel; and STRIP pixels of
    # a row (fewer at its end: W % STRIP != 0 here).
    per_thread = GROUP if channels % GROUP == 0 else (2 if channels_last else 1)
    assert W % STRIP != 0
    assert k["threads"] == 2 * (channels // per_thread) * H * -(-W // STRIP)


def test_input_gradient_visits_are_few_beyond_the_useful_ones():
    """Detection-like boxes (16 to 200 pixels on a 1/4 map): the list entries a thread
    visits stay within 2x of the RoIs whose footprint holds its pixel, and each RoI that
    can read its pixel (a sample row and a sample column of theirs touch it) is among
    them."""
    from roiops.testing import random_rois

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 100, 168, generator=gen)
    rois = random_rois(256, 2, (400, 672), min_size=16, generator=gen)
    p = params("roi_align", "avg")
    out, arg = CPU.roi_align(x, rois, 0.25, *p, True)
    _, kernels = counted(lambda: EMULATED._roi_align_backward(torch.ones_like(out), x, arg, rois, 0.25, *p))
    k = kernels["sampled_backward_input"]
    assert 0 < k["roi_useful"] <= k["roi_footprint"] <= k["roi_visits"] <= 2 * k["roi_footprint"]


@pytest.mark.parametrize("dtype,channels_last,channels,per_thread", [
    (torch.float32, False, GROUP, GROUP), (torch.float32, True, GROUP, GROUP), (torch.bfloat16, True, GROUP, GROUP),
    (torch.float32, False, 8, 1), (torch.float32, True, 8, 4), (torch.bfloat16, True, 8, 8)])
def test_forward_reads_four_taps_and_at_most_one_table_entry_per_sample(dtype, channels_last, channels, per_thread):
    """A sample read is one 16-byte pack of channels_last channels or one NCHW
    channel: four map loads each, and the RoI's table entries (its facts, 2 row and 2
    column taps per bin at sampling ratio 2) shared by the thread's channels."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, channels, 40, 48, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 3.0, 4.0, 30.0, 33.0], [0, 10.0, 2.0, 40.0, 20.0]])  # every sample inside
    out, kernels = counted(lambda: EMULATED.roi_align(x, rois, 1.0, 7, 7, 2, True, "avg", "bilinear", False))
    f = kernels["sampled_forward"]
    assert f["threads"] * per_thread == out[0].numel()
    assert f["data_loads"] == 4 * f["samples"]
    assert f["table_loads"] == 5 * f["threads"]
    if channels % GROUP == 0:
        assert f["table_loads"] <= f["samples"]


def test_counting_is_off_outside_a_measurement():
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]])
    _C.emulator_costs(False)
    EMULATED.roi_align(x, rois, 1.0, 2, 2, 2, True, "avg", "bilinear", False)
    assert _C.emulator_costs(False) == {}


@pytest.mark.parametrize("sampling_ratio", [1, 2, 4, 8, 0])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_input_gradient_near_few_and_many_samples(sampling_ratio, channels_last):
    """Max mode finds each channel's argmax sample among the samples near a strip: by
    comparing every one of them while a bin has at most 4 x 4 near it (sampling ratio
    <= 4), else by reading the argmax sample's taps (sampling ratio 8, and adaptive
    grids on boxes far wider than their bins' pixels, whose samples are < 1 pixel
    apart). Both agree with the CPU to float64 rounding."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, GROUP, 24, 30, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 1.5, 2.0, 9.0, 7.5], [1, 0.0, 0.0, 29.0, 23.0], [0, 10.25, 3.5, 27.0, 20.0],
                         [1, 4.0, 4.0, 5.5, 6.0]], dtype=torch.float64)
    p = [3, 3, sampling_ratio, True, "max", "bilinear"]
    out, arg = CPU.roi_align(x, rois, 1.0, *p, True)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    gx = EMULATED._roi_align_backward(grad, x, arg, rois, 1.0, *p)
    expected = CPU._roi_align_backward(grad, x, arg, rois, 1.0, *p)
    torch.testing.assert_close(gx, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("images,size,rois,chunks", [
    (1, 3 * TILE, 3 * LIST_CHUNK + 5, 4),  # one chunk per LIST_CHUNK RoIs
    (64, TILE, 200, 3),  # fewer chunks: 7 would need more counts than the lists' bound (200 x 2 entries)
])
def test_lists_are_built_in_chunks_of_rois(images, size, rois, chunks):
    """A tile's RoI list is built by one thread per chunk of LIST_CHUNK of its image's
    RoIs, so no list-building thread walks more RoIs however many share an image,
    unless the chunks' counts would take more memory than the lists' own bound
    (K x (min(tiles per map, MAX_TILES) + 1) entries): then fewer, longer chunks that
    still cover every RoI. Every RoI is on image 0, so one image holds them all; the
    gradient agrees with the CPU either way."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(images, 4, size, size, generator=gen, dtype=torch.float64)
    xy = torch.rand(rois, 2, 2, generator=gen, dtype=torch.float64) * (size - 1)
    boxes = torch.cat([torch.zeros(rois, 1, dtype=torch.float64), xy.min(1).values, xy.max(1).values], 1)
    p = params("roi_align", "avg")
    out, arg = CPU.roi_align(x, boxes, 1.0, *p, True)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    gx, kernels = counted(lambda: EMULATED._roi_align_backward(grad, x, arg, boxes, 1.0, *p))
    torch.testing.assert_close(gx, CPU._roi_align_backward(grad, x, arg, boxes, 1.0, *p), rtol=1e-12, atol=1e-12)
    cells = images * (size // TILE) ** 2 + images  # tiles, then one wide list per image
    lists = kernels["list_rois_count"]
    assert lists["threads"] == cells * chunks
    assert lists["longest_walk"] == max(LIST_CHUNK, -(-rois // chunks))
