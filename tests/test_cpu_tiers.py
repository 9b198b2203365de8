"""Every scheduling tier of the CPU kernels is reached by a case sized from the tuning
constants (csrc/cpu/tuning.h, exported as the CPU module's `tuning`), as the tier
counters show (csrc/cpu/tier_counts.h), and gives the reference's values there and the
same bits, values and input gradients, as the other memory format, which takes other
tiers. A constant that moves moves its cases with it; a case that no longer
reaches its tier fails here instead of silently testing another one.

The tiers. Forward, planar (NCHW) maps: a channel block of a whole plane transposed
once into a channels-last copy that all of its image's RoIs read, in blocks of 64
channels (`plane_blocks`) while that fits `plane_bytes`, else 16 (`narrow_plane_blocks`),
when the image's RoIs would gather more pixels than the plane has; a block's RoIs split
into parts for the threads (`plane_block_parts`); otherwise each RoI's own footprint
transposed (`roi_tiles`), or read in place when it exceeds `max_tile_pixels`
(`planar_in_place`). Channels-last maps are read in place (`channels_last_tasks`). Each
image's RoIs are pooled top to bottom (`reordered_rois`). Outputs are staged and stored
per task (`staged_outputs`), stored bin by bin when a task's block exceeds
`stage_elems` (`in_place_outputs`), and written around the caches when the outputs
exceed `streamed_output_bytes` (`streamed_outputs`). Backward: channels-last gradients
are accumulated in place (`channels_last_windows`), planar ones in a channels-last
scratch of `scratch_bytes` holding the whole plane (`plane_windows`), windows of rows
(`row_windows`) or of columns too (`column_windows`); output gradients and argmax are
read as transposed bin-major blocks (`staged_bin_reads`) or bin by bin
(`bin_by_bin_reads`); a group's RoI geometries beyond `geometry_cache_bytes` are built
again per task (`rebuilt_geometries`)."""

import dataclasses
import math

import pytest
import torch
from cpu_tuning import MODULE, TUNING, tier_counts

import roiops
from roiops import reference

F32 = 4  # bytes of the cases' float32 maps and accumulators
BLOCK = TUNING["channel_block"]
# Pixels of a planar gradient window (a scratch of BLOCK float32 channels per pixel).
SCRATCH_PIXELS = TUNING["scratch_bytes"] // (BLOCK * F32)


@dataclasses.dataclass
class Case:
    """k RoIs on n images of a c-channel h x w float32 map, sides from min_side to
    box pixels (scale 1), given bottom to top; pooled to `output` bins, roi_align
    with `sampling_ratio`."""

    n: int
    c: int
    h: int
    w: int
    k: int
    box: float
    reaches: tuple[str, ...]
    avoids: tuple[str, ...] = ()
    output: int | tuple[int, int] = 7
    min_side: float = 1.0
    channels_last: bool = False
    sampling_ratio: int = 2

    def inputs(self):
        gen = torch.Generator().manual_seed(self.k)
        x = torch.randn(self.n, self.c, self.h, self.w, generator=gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        size = torch.tensor([self.w * 1.0, self.h * 1.0])
        side = self.min_side + torch.rand(self.k, 2, generator=gen) * (self.box - self.min_side)
        xy = torch.rand(self.k, 2, generator=gen) * (size - side).clamp(min=0)
        rois = torch.cat([torch.randint(0, self.n, (self.k, 1), generator=gen).float(), xy, xy + side], 1)
        return x, rois[(rois[:, 2] + rois[:, 4]).argsort(descending=True)]


def plane_side(channels):
    """The side of the largest square float32 plane whose block of `channels`
    channels fits plane_bytes."""
    return math.isqrt(TUNING["plane_bytes"] // (channels * F32))


def rois_for_plane(pixels):
    """RoIs on one image that gather more pixels than a plane of `pixels` has."""
    return pixels // TUNING["plane_roi_pixels"] + 1


# 70 channels: a block of 64 and one of 6. 2 * min_plane_part RoIs: each block's RoIs split
# into 2 parts at any thread count.
_SMALL = 40
_NARROW = plane_side(BLOCK) * 3 // 2  # too large for 64 channels, fits 16
_TILED = math.isqrt(TUNING["max_tile_pixels"]) * 2
_STAGED_BINS = math.isqrt(TUNING["stage_elems"] // BLOCK) + 1  # a 64-channel block's bins overflow
_GEOMETRY_BINS = 4096  # roi_pool's geometry of (4096, 1) bins: 2 * (4096 + 1) ints
_ROW_WIDTH = 70

CASES = {
    "plane-blocks": Case(
        1, 70, _SMALL, _SMALL, max(rois_for_plane(_SMALL**2), 2 * TUNING["min_plane_part"]), 20,
        reaches=("plane_blocks", "plane_block_parts", "reordered_rois", "staged_outputs",
                 "plane_windows", "staged_bin_reads"),
        avoids=("narrow_plane_blocks", "roi_tiles", "planar_in_place", "row_windows", "in_place_outputs",
                "bin_by_bin_reads")),
    "narrow-plane-blocks": Case(
        1, 4, _NARROW, _NARROW, rois_for_plane(_NARROW**2), _NARROW / 2,
        reaches=("narrow_plane_blocks",), avoids=("plane_blocks", "roi_tiles")),
    "roi-tiles": Case(
        2, 20, _TILED, _TILED, 4, math.isqrt(TUNING["max_tile_pixels"]) - 2,
        reaches=("roi_tiles",), avoids=("plane_blocks", "narrow_plane_blocks", "planar_in_place")),
    # Adaptive sampling: more distinct sample rows and columns than a tile holds.
    "planar-in-place": Case(
        2, 20, _TILED, _TILED, 4, _TILED, min_side=_TILED, sampling_ratio=0,
        reaches=("planar_in_place",), avoids=("roi_tiles", "plane_blocks", "narrow_plane_blocks")),
    "channels-last": Case(
        1, 70, _SMALL, _SMALL, 40, 20, channels_last=True,
        reaches=("channels_last_tasks", "channels_last_windows", "bin_by_bin_reads"),
        avoids=("plane_blocks", "roi_tiles", "planar_in_place", "plane_windows", "staged_bin_reads")),
    "in-place-outputs": Case(
        1, BLOCK, 30, 30, 10, 20, output=_STAGED_BINS,
        reaches=("in_place_outputs", "bin_by_bin_reads"), avoids=("staged_outputs",)),
    "streamed-outputs": Case(
        1, 37, 20, 24, TUNING["streamed_output_bytes"] // (37 * 49 * F32) + 64, 10,
        reaches=("streamed_outputs",)),
    "row-windows": Case(
        1, 20, 2 * SCRATCH_PIXELS // _ROW_WIDTH, _ROW_WIDTH, 30, 60,
        reaches=("row_windows",), avoids=("column_windows", "plane_windows")),
    "column-windows": Case(
        1, 20, 3, SCRATCH_PIXELS + 100, 30, 400,
        reaches=("column_windows",), avoids=("plane_windows",)),
    "rebuilt-geometries": Case(
        1, 1, 64, 64, TUNING["geometry_cache_bytes"] // (2 * (_GEOMETRY_BINS + 1) * 4) + 8, 64,
        output=(_GEOMETRY_BINS, 1), reaches=("rebuilt_geometries",)),
}


def pooled(op, x, rois, case):
    if op == "roi_align":
        return roiops.roi_align(x, rois, case.output, 1.0, case.sampling_ratio, True)
    return roiops.roi_pool(x, rois, case.output, 1.0)


def forward_backward(op, x, rois, case, grad):
    """Output and input gradient, the output gradient in the map's memory format."""
    x = x.detach().requires_grad_()
    out = pooled(op, x, rois, case)
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out.backward(grad.contiguous(memory_format=layout))
    return out.detach(), x.grad


def expected(op, x, rois, case):
    if op == "roi_align":
        return reference.roi_align(x, rois, case.output, 1.0, case.sampling_ratio, True)
    return reference.roi_pool(x, rois, case.output, 1.0)


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("name", list(CASES))
def test_each_tier_is_reached_and_gives_the_reference_values(name, op):
    case = CASES[name]
    x, rois = case.inputs()
    output = (case.output, case.output) if isinstance(case.output, int) else case.output
    grad = torch.randn(case.k, case.c, *output, generator=torch.Generator().manual_seed(1))
    with tier_counts() as counts:
        out, grad_in = forward_backward(op, x, rois, case, grad)
    for tier in case.reaches:
        assert counts[tier] > 0, f"{name} did not reach {tier}: {counts}"
    for tier in case.avoids:
        assert counts[tier] == 0, f"{name} reached {tier}: {counts}"
    assert out.abs().sum() > 0 and grad_in.abs().sum() > 0
    other = x.contiguous(memory_format=torch.contiguous_format if case.channels_last else torch.channels_last)
    out_other, grad_other = forward_backward(op, other, rois, case, grad)
    assert torch.equal(out, out_other) and torch.equal(grad_in, grad_other)
    # The reference materialises every bin's pixels: a few RoIs, one at a time.
    for k in sorted({0, case.k // 2, case.k - 1}):
        torch.testing.assert_close(out[k : k + 1], expected(op, x, rois[k : k + 1], case), atol=2e-5, rtol=2e-5)


def test_every_counted_tier_has_a_case():
    with tier_counts() as counts:
        pass
    assert set(counts) == {tier for case in CASES.values() for tier in case.reaches}


def test_nothing_is_counted_unless_asked():
    x, rois = CASES["plane-blocks"].inputs()
    MODULE.tier_counts(False)
    roiops.roi_align(x, rois, 7, 1.0, 2, True)
    assert set(MODULE.tier_counts(False).values()) == {0}
