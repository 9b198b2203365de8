"""The reference (roiops.reference) on exact hand-computed cases of the contract
(docs/SEMANTICS.md): rounding ties, float64 geometry whatever the dtypes,
empty maps and non-finite values. The parity tests trust the reference; these pin it."""

import pytest
import torch

from roiops import reference

INF, NAN = float("inf"), float("nan")


def grads(out, *tensors):
    """Gradients of out.sum(); zeros where the output does not depend on a tensor."""
    got = torch.autograd.grad(out.sum(), tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, got, strict=True)]


def ramp(H, W, dtype):
    """Map [1, 1, H, W] with pixel (y, x) = 10 y + x: the value says which pixel was read."""
    y = torch.arange(H, dtype=dtype)[:, None]
    x = torch.arange(W, dtype=dtype)[None, :]
    return (10 * y + x)[None, None]


def test_round_half_away_is_exact():
    x32 = torch.tensor([0.49999997, -0.49999997, 0.5, -0.5, 1.5, -2.5, 2.4999998, INF, -INF, NAN])
    torch.testing.assert_close(
        reference._round_half_away(x32),
        torch.tensor([0.0, 0.0, 1.0, -1.0, 2.0, -3.0, 2.0, INF, -INF, NAN]), equal_nan=True, atol=0, rtol=0)
    x64 = torch.tensor([0.49999999999999994, -0.49999999999999994, 2.5, -2.4999999999999996], dtype=torch.float64)
    torch.testing.assert_close(reference._round_half_away(x64),
                               torch.tensor([0.0, 0.0, 3.0, -2.0], dtype=torch.float64), atol=0, rtol=0)


@pytest.mark.parametrize("dtype,just_below_half", [(torch.float32, 0.49999997), (torch.float64, 0.49999999999999994)],
                         ids=["float32", "float64"])
def test_quantized_box_rounds_just_below_half_down(dtype, just_below_half):
    """A coordinate just below 0.5 rounds to pixel 0 (|x| + 0.5 would round up to 1)."""
    x = ramp(3, 3, dtype)
    c = just_below_half
    rois = torch.tensor([[0, c, c, c, c]], dtype=dtype)
    # roi_pool: the box is pixel (0, 0) alone.
    assert reference.roi_pool(x, rois, 1).item() == 0
    # roi_warp: box [0, 0, 0, 0] widened to 1 px, one sample at (0.5, 0.5): 5.5.
    assert reference.roi_warp(x, rois, 1, sampling_ratio=1, mode="avg").item() == 5.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_geometry_is_float64_whatever_the_feature_dtype(dtype):
    """The quantized box [2, 1, 4, 1] puts sample 0 of bin 2 at 2 + 2*(2/3) + (2/3)/4:
    3.4999999999999996 in float64 (nearest pixel 3), exactly 3.5 in float32 (pixel 4).
    Every feature dtype must read the float64 pixel."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64, generator=gen).to(dtype)
    rois = torch.tensor([[0, 2.2989, 1.2374, 3.7274, 1.2399]], dtype=torch.float64).to(dtype)
    kw = dict(output_size=(2, 3), spatial_scale=1.0, sampling_ratio=2, mode="max", sampling="nearest")
    expected = reference.roi_warp(x.double(), rois.double(), **kw)
    got = reference.roi_warp(x, rois, **kw)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected.to(dtype), atol=0, rtol=0)


SAMPLED_AND_POOL = [
    pytest.param("roi_align", dict(sampling="bilinear"), id="roi_align-bilinear"),
    pytest.param("roi_align", dict(sampling="nearest"), id="roi_align-nearest"),
    pytest.param("roi_warp", dict(sampling="bilinear"), id="roi_warp-bilinear"),
    pytest.param("roi_warp", dict(sampling="nearest"), id="roi_warp-nearest"),
    pytest.param("roi_pool", {}, id="roi_pool"),
]


@pytest.mark.parametrize("op,kw", SAMPLED_AND_POOL)
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("shape,K", [((1, 2, 0, 5), 2), ((1, 2, 4, 0), 2), ((1, 0, 4, 5), 2), ((1, 2, 4, 5), 0)],
                         ids=["H=0", "W=0", "C=0", "K=0"])
def test_empty_map_or_no_roi_gives_zeros(op, kw, mode, shape, K):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 1.0, 3.0, 2.5]] * K, dtype=torch.float64).reshape(K, 5).requires_grad_()
    out = getattr(reference, op)(x, rois, (2, 3), mode=mode, **kw)
    torch.testing.assert_close(out, torch.zeros(K, shape[1], 2, 3, dtype=torch.float64), atol=0, rtol=0)
    gx, gr = grads(out, x, rois)
    assert gx.shape == x.shape and gr.shape == rois.shape
    assert not gx.any() and not gr.any()


@pytest.mark.parametrize("op", ["roi_align", "roi_warp"])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_nearest_reads_one_pixel_so_non_finite_passes_through(op, mode, value):
    """Box [0, 0, 1, 1], one sample at (0.5, 0.5): nearest pixel (1, 1), read alone (a
    zero-weighted second tap would turn inf into NaN)."""
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = value
    rois = torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]])
    out = getattr(reference, op)(x, rois, 1, sampling_ratio=1, mode=mode, sampling="nearest")
    torch.testing.assert_close(out, torch.full((1, 1, 1, 1), value), equal_nan=True, atol=0, rtol=0)


@pytest.mark.parametrize("op,kw", [p for p in SAMPLED_AND_POOL if "bilinear" not in p.id])
def test_max_with_nan_is_nan_and_gradient_goes_to_first_nan(op, kw):
    """Row 0..4 = [0, 1, inf, nan, nan]; the single bin sees pixels 1..4 (samples at
    x = 0.5 .. 3.5, nearest 1 .. 4; roi_pool: columns 1 .. 4). The bin is NaN and its
    gradient goes to pixel 3, the first NaN, not to the +inf before it."""
    x = torch.tensor([[[[0.0, 1.0, INF, NAN, NAN]]]], requires_grad=True)
    rois = torch.tensor([[0, 1.0, 0.0, 4.0, 0.0]] if op == "roi_pool" else [[0, 0.0, 0.0, 4.0, 1.0]])
    out = getattr(reference, op)(x, rois, 1, mode="max", **kw)
    assert out.isnan().all()
    (gx,) = grads(out, x)
    torch.testing.assert_close(gx, torch.tensor([[[[0.0, 0.0, 0.0, 1.0, 0.0]]]]), atol=0, rtol=0)


def test_roi_pool_max_of_only_minus_inf_stays_in_the_bin():
    x = torch.tensor([[[[1.0, 2.0], [3.0, -INF]]]], requires_grad=True)
    out = reference.roi_pool(x, torch.tensor([[0, 1.0, 1.0, 1.0, 1.0]]), 1, mode="max")
    assert out.item() == -INF
    (gx,) = grads(out, x)
    torch.testing.assert_close(gx, torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]]), atol=0, rtol=0)


def test_float32_boxes_on_bfloat16_features_read_the_float64_pixels():
    """Autocast's mix: float32 boxes, bfloat16 features. The same pixels as float32 or
    float64 features with the same boxes (the float64-geometry tie of
    test_geometry_is_float64_whatever_the_feature_dtype). _sampled is called directly
    so that the public argument checks do not decide which dtype pairs are allowed."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64, generator=gen).to(torch.bfloat16)
    rois = torch.tensor([[0, 2.2989, 1.2374, 3.7274, 1.2399]], dtype=torch.float32)
    args = ((2, 3), 1.0, 2, False, True, "max", "nearest")  # roi_warp
    got = reference._sampled(x, rois, *args)
    assert got.dtype == torch.bfloat16
    for features, boxes in ((x.float(), rois), (x.double(), rois.double())):
        torch.testing.assert_close(got, reference._sampled(features, boxes, *args).to(torch.bfloat16),
                                   atol=0, rtol=0)


def test_float64_boxes_keep_their_precision_on_float16_features():
    """x1 = 1 - 2^-40 is 1.0 in float32. The one sample of box [x1, 0, x1, 0] (widened
    to 1 px) is at x = 1.5 - 2^-40: nearest pixel column 1, not 2. The box gradient of
    roi_align comes back in the boxes' dtype."""
    x = ramp(3, 4, torch.float16)
    c = 1 - 2.0**-40
    rois = torch.tensor([[0, c, 0.0, c, 0.0]], dtype=torch.float64, requires_grad=True)
    args = ((1, 1), 1.0, 1, False, False, "avg")  # roi_align
    assert reference._sampled(x, rois, *args, "nearest").item() == 11  # pixel (1, 1)
    out = reference._sampled(x, rois, *args, "bilinear")
    (gr,) = grads(out, rois)
    assert gr.dtype == torch.float64
    # Same values and box gradient as float32 features: both accumulate in float32.
    r32 = rois.detach().clone().requires_grad_()
    out32 = reference._sampled(x.float(), r32, *args, "bilinear")
    torch.testing.assert_close(out.float(), out32.to(torch.float16).float(), atol=0, rtol=0)
    torch.testing.assert_close(gr, grads(out32, r32)[0], atol=0, rtol=0)


def channel_ramps(C, H, W):
    """Map [1, C, H, W] with pixel (c, y, x) = 100 c + 10 y + x: says which channel and pixel was read."""
    return ramp(H, W, torch.float64) + 100 * torch.arange(C, dtype=torch.float64)[None, :, None, None]


def test_ps_roi_pool_bins_are_torchvisions():
    """Box [0, 0, 3, 3]: size 3 (no +1), bins [0, 2) and [1, 3); bin (ph, pw) reads channel
    2 ph + pw. Box [0, 0, 4, 4] on a 4 x 4 map: bins [0, 2) and [2, 4) clipped to [2, 3), so
    the last row and column are never read."""
    x = channel_ramps(4, 4, 4)
    out = reference.ps_roi_pool(x, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]], dtype=torch.float64), 2)
    torch.testing.assert_close(out, torch.tensor([[[[5.5, 106.5], [215.5, 316.5]]]], dtype=torch.float64))
    out = reference.ps_roi_pool(x, torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]], dtype=torch.float64), 2)
    torch.testing.assert_close(out, torch.tensor([[[[5.5, 107.0], [220.5, 322.0]]]], dtype=torch.float64))


def test_ps_roi_align_reads_each_bins_channel_with_aligned_geometry():
    """Box [0.5, 0.5, 2.5, 2.5] is [0, 2] in map coordinates (aligned); one sample at the
    centre of each 1 x 1 bin. Output channel c of bin b reads channel 4 c + b."""
    x = channel_ramps(8, 4, 4)
    out = reference.ps_roi_align(x, torch.tensor([[0, 0.5, 0.5, 2.5, 2.5]], dtype=torch.float64), 2,
                                 sampling_ratio=1)
    want = torch.tensor([[[5.5, 106.5], [215.5, 316.5]], [[405.5, 506.5], [615.5, 716.5]]], dtype=torch.float64)
    torch.testing.assert_close(out, want[None])


@pytest.mark.parametrize("op", ["ps_roi_align", "ps_roi_pool", "prroi_pool"])
@pytest.mark.parametrize("shape,K", [((1, 4, 0, 5), 2), ((1, 4, 4, 0), 2), ((1, 0, 4, 5), 2), ((1, 4, 4, 5), 0)],
                         ids=["H=0", "W=0", "C=0", "K=0"])
def test_cpu_only_ops_empty_map_or_no_roi_gives_zeros(op, shape, K):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 1.0, 3.0, 2.5]] * K, dtype=torch.float64).reshape(K, 5)
    out = getattr(reference, op)(x, rois, (2, 2))
    channels = shape[1] // 4 if op.startswith("ps_") else shape[1]
    torch.testing.assert_close(out, torch.zeros(K, channels, 2, 2, dtype=torch.float64), atol=0, rtol=0)
    (gx,) = grads(out, x)
    assert gx.shape == x.shape and not gx.any()


def bilinear_surface(x, ys, xs):
    """f(y, x) = sum_ij v[i, j] * max(0, 1 - |y - i|) * max(0, 1 - |x - j|) of the map x
    [H, W] at the grid ys x xs, straight from prroi_pool's definition (zero off the map)."""
    hy = (1 - (ys[:, None] - torch.arange(x.shape[0], dtype=ys.dtype)[None, :]).abs()).clamp(min=0)
    hx = (1 - (xs[:, None] - torch.arange(x.shape[1], dtype=xs.dtype)[None, :]).abs()).clamp(min=0)
    return hy @ x @ hx.T


def midpoint_prroi_pool(x, box, output_size, scale, n=600):
    """prroi_pool of one box on the map x [H, W] by the dense midpoint rule: n x n points per bin."""
    ph_n, pw_n = output_size
    x1, y1, x2, y2 = (c * scale for c in box)
    bh, bw = max(y2 - y1, 0) / ph_n, max(x2 - x1, 0) / pw_n
    out = torch.zeros(ph_n, pw_n, dtype=torch.float64)
    if bh == 0 or bw == 0:
        return out
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    for ph in range(ph_n):
        for pw in range(pw_n):
            out[ph, pw] = bilinear_surface(x, y1 + (ph + t) * bh, x1 + (pw + t) * bw).mean()
    return out


BOXES = [
    [0.3, 0.7, 4.2, 3.9],     # inside
    [-2.6, -1.3, 3.1, 2.2],   # across the top-left border and beyond the surface's support
    [3.4, 2.1, 8.9, 7.6],     # across the bottom-right border
    [2.25, 1.5, 2.75, 1.75],  # smaller than a pixel
    [-6.0, -5.0, -2.5, -1.5],  # outside the surface's support: 0
    [3.0, 3.0, 1.0, 1.0],     # inverted: 0
]


@pytest.mark.parametrize("box", BOXES)
def test_prroi_pool_is_the_integral_of_the_bilinear_surface(box):
    """The reference's closed-form weights against a dense numerical integration of f."""
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    rois = torch.tensor([[0, *box]], dtype=torch.float64)
    for size, scale in (((2, 3), 1.0), ((3, 1), 0.5)):
        got = reference.prroi_pool(x[None, None], rois, size, scale)[0, 0]
        torch.testing.assert_close(got, midpoint_prroi_pool(x, box, size, scale), atol=2e-5, rtol=1e-5)


def test_prroi_pool_hand_computed_values():
    """Ones make f = 1 on [0, H-1] x [0, W-1] (the hats sum to 1 there), falling linearly to 0
    one pixel beyond: the box [-1, -1, 0, 0] averages (1 + y)(1 + x) over [-1, 0]^2 = 1/4, the
    box [4, 3, 6, 5] (x from the last column on, y from the last row on) 1/4 * 1/4. A box
    narrower than 1e-9 pixel pools f at its point (no rounding to an empty bin)."""
    ones = torch.ones(1, 1, 4, 5, dtype=torch.float64)
    rois = torch.tensor([[0, 0.5, 1.0, 3.5, 2.5], [0, -1.0, -1.0, 0.0, 0.0], [0, 4.0, 3.0, 6.0, 5.0]],
                        dtype=torch.float64)
    out = reference.prroi_pool(ones, rois, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([1.0, 0.25, 0.0625], dtype=torch.float64))
    x = ramp(4, 5, torch.float64)  # f is the ramp itself, 10 y + x, inside the map
    point = torch.tensor([[0, 1.25, 2.5, 1.25 + 1e-10, 2.5 + 1e-10]], dtype=torch.float64)
    torch.testing.assert_close(reference.prroi_pool(x, point, 1).flatten(),
                               torch.tensor([26.25], dtype=torch.float64), atol=1e-6, rtol=0)
    # On the ramp the mean over a bin is f at the bin's centre; the box is 2 bins wide.
    out = reference.prroi_pool(x, torch.tensor([[0, 0.5, 0.5, 3.5, 2.5]], dtype=torch.float64), (1, 2))
    torch.testing.assert_close(out.flatten(), torch.tensor([16.25, 17.75], dtype=torch.float64))


def test_prroi_pool_box_gradient_is_the_bin_edges_line_integrals():
    """d(out)/d(x2) of one bin on the ramp: f's mean over [x1, x2] x [y1, y2] moves by 1/2 per
    unit of x2 (the centre moves half as fast), and by 5 per unit of y2. Also float64 gradcheck
    of the reference away from integer edges (where the hat's slope changes)."""
    x = ramp(4, 5, torch.float64)
    rois = torch.tensor([[0, 0.5, 0.5, 3.5, 2.5]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(reference.prroi_pool(x, rois, 1).sum(), rois)
    torch.testing.assert_close(g, torch.tensor([[0, 0.5, 5.0, 0.5, 5.0]], dtype=torch.float64))
    xr = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    coords = torch.tensor([[0.3, 0.7, 4.2, 3.9], [-2.6, -1.3, 3.1, 2.2], [3.4, 2.1, 8.9, 7.6]],
                          dtype=torch.float64, requires_grad=True)

    def f(x, c):
        return reference.prroi_pool(x, torch.cat([torch.zeros(3, 1, dtype=torch.float64), c], 1), (2, 3))

    assert torch.autograd.gradcheck(f, (xr, coords))
