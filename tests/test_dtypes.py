"""The geometry does not depend on dtypes: every feature dtype reads the same pixels
(the geometry is float64 from the box values), boxes keep their own precision in
any floating dtype, and autocast's float32 boxes with bfloat16 features just work."""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from roi_cases import ALL_OPS, DTYPES, OPS, PS_OPS, cases

import roiops

FEATURE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def distinct_integer_features(x: torch.Tensor) -> torch.Tensor:
    """Each plane a permutation of distinct integers in [-50, 50): exact in every
    dtype, so a max picks the same pixel in all of them and returns it exactly."""
    N, C, H, W = x.shape
    gen = torch.Generator().manual_seed(H * 100 + W)
    planes = [torch.randperm(100, generator=gen)[: H * W].double() - 50 for _ in range(N * C)]
    out = torch.stack(planes).reshape(N, C, H, W) if planes else torch.zeros(x.shape, dtype=torch.float64)
    return out.contiguous(memory_format=torch.channels_last) if not x.is_contiguous() else out


def max_nearest(case):
    kwargs = dict(case.kwargs, mode="max")
    if case.op != "roi_pool":
        kwargs["sampling"] = "nearest"
    return kwargs


def forward_with_argmax(op, x, rois, kwargs):
    """The registered op's (output, argmax): argmax names the pixel or sample chosen."""
    ph, pw = roiops._validation.output_size_pair(op, kwargs["output_size"])
    scale, mode = kwargs["spatial_scale"], kwargs["mode"]
    ops = torch.ops.roiops
    if op == "roi_pool":
        return ops.roi_pool(x, rois, scale, ph, pw, mode, True)
    sr = max(kwargs["sampling_ratio"], 0)
    if op == "roi_warp":
        return ops.roi_warp(x, rois, scale, ph, pw, sr, mode, kwargs["sampling"], True)
    return ops.roi_align(x, rois, scale, ph, pw, sr, kwargs["aligned"], mode, kwargs["sampling"], True)


@given(cases(dtype=st.just(torch.float64), box_dtype=st.just(torch.float32), specials=False))
def test_every_feature_dtype_reads_the_same_pixels(case):
    """Nearest sampling and max over distinct integers is exact in every dtype, so the
    float32/float16/bfloat16 outputs must equal the float64 output bit for bit and
    pick the same samples, also where a sample lies exactly on a rounding tie, a
    pixel border or the map border (the drawn boxes favour integers and halves)."""
    kwargs = max_nearest(case)
    x64 = distinct_integer_features(case.input)
    out64, arg64 = forward_with_argmax(case.op, x64, case.rois, kwargs)
    for dt in FEATURE_DTYPES:
        out, arg = forward_with_argmax(case.op, x64.to(dt), case.rois, kwargs)
        assert torch.equal(arg, arg64), (dt, case)
        assert torch.equal(out, out64.to(dt)), (dt, case)


@pytest.mark.parametrize("dtype", FEATURE_DTYPES)
def test_tie_that_float32_geometry_got_wrong(dtype):
    """roi_warp nearest: in float64 a sample lies at 3.4999999999999996 and reads
    pixel 3; float32 geometry rounded it to exactly 3.5 and read pixel 4, changing a
    whole output column."""
    x = torch.randn(2, 8, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rois = torch.tensor([[0, 2.2989, 1.2374, 3.7274, 1.2399]], dtype=torch.float64)
    kw = dict(mode="max", sampling="nearest")
    want = roiops.roi_warp(x, rois, (2, 3), 1.0, 2, **kw)
    got = roiops.roi_warp(x.to(dtype), rois.to(dtype), (2, 3), 1.0, 2, **kw)
    assert torch.equal(got, want.to(dtype))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", FEATURE_DTYPES)
def test_samples_on_the_map_border_and_last_row(op, dtype):
    """Boxes whose samples land exactly on v == W / v == H (still on the map, read
    from the last pixel) and on the last-row clamp: same pixels in every dtype."""
    x64 = distinct_integer_features(torch.empty(1, 2, 5, 7))
    rois = torch.tensor([[0, 5.0, 3.0, 7.0, 5.0], [0, 6.0, 4.0, 8.0, 6.0], [0, 0.0, 0.0, 7.0, 5.0],
                         [0, 6.5, 4.5, 7.5, 5.5]], dtype=torch.float64)
    kwargs = dict(output_size=(2, 2), spatial_scale=1.0, mode="max", sampling_ratio=2, sampling="nearest",
                  aligned=False)
    if op == "roi_pool":
        kwargs = dict(output_size=(2, 2), spatial_scale=1.0, mode="max")
    out64, arg64 = forward_with_argmax(op, x64, rois, kwargs)
    out, arg = forward_with_argmax(op, x64.to(dtype), rois.float(), kwargs)
    assert torch.equal(arg, arg64) and torch.equal(out, out64.to(dtype))


VARIANTS = [
    ("roi_align", dict(sampling_ratio=2, aligned=True, mode="avg")),
    ("roi_align", dict(sampling_ratio=-1, aligned=False, mode="max")),
    ("roi_warp", dict(sampling_ratio=2, mode="max")),
    ("roi_pool", dict(mode="avg")),
    ("ps_roi_align", dict(sampling_ratio=2)),
    ("ps_roi_pool", {}),
    ("prroi_pool", {}),
    ("roi_align_rotated", dict(sampling_ratio=2)),
]


@pytest.mark.parametrize("op,kw", VARIANTS, ids=[f"{v[0]}-{v[1].get('mode', 'avg')}" for v in VARIANTS])
@pytest.mark.parametrize("feature_dtype,box_dtype", list(itertools.product(DTYPES, DTYPES)))
def test_any_box_dtype_with_any_feature_dtype(op, kw, feature_dtype, box_dtype):
    """Box values that every dtype holds exactly give the same output in every box
    dtype (bitwise); the box gradient comes back in the boxes' dtype, equal to the
    float64-box gradient rounded to it, and the input gradient in the input's."""
    gen = torch.Generator().manual_seed(0)
    # The position-sensitive ops read 2 channels for each of the 3 x 2 bins.
    channels = 12 if op in PS_OPS else 3
    x = torch.randn(2, channels, 12, 14, generator=gen, dtype=torch.float64).to(feature_dtype)
    # Multiples of 1/4 with at most 8 significant bits: exact in bfloat16 too.
    rois64 = torch.tensor([[0, 1.25, 2.5, 20.75, 17.0], [1, -3.5, 4.25, 30.0, 18.5], [1, 9.75, 1.0, 21.5, 17.25]],
                          dtype=torch.float64)
    if op == "roi_align_rotated":  # (cx, cy, w, h, angle), as exact
        rois64 = torch.tensor([[0, 11.0, 9.75, 19.5, 14.5, 30.0], [1, 13.25, 11.25, 33.5, 14.25, -45.0],
                               [1, 15.5, 9.0, 11.75, 16.25, 112.0]], dtype=torch.float64)
    grads = {}
    for dt in (torch.float64, box_dtype):
        xr = x.clone().requires_grad_()
        r = rois64.to(dt).detach().requires_grad_()
        out = getattr(roiops, op)(xr, r, (3, 2), 0.5, **kw)
        assert out.dtype == feature_dtype
        out.backward(torch.ones_like(out))
        assert xr.grad.dtype == feature_dtype and r.grad.dtype == dt
        grads[dt] = (out, xr.grad, r.grad)
    (o64, x64, r64), (o, xg, rg) = grads[torch.float64], grads[box_dtype]
    assert torch.equal(o, o64) and torch.equal(xg, x64)
    assert torch.equal(rg, r64.to(box_dtype))
    assert bool(r64.abs().sum() > 0) == (op in ("roi_align", "ps_roi_align", "prroi_pool", "roi_align_rotated"))


def test_float32_boxes_keep_their_precision_with_bfloat16_features():
    """Rounding [1000.3, 601.7, 1203.5, 795.9] to bfloat16 moves it to [1000, 600,
    1200, 796] and changes the output by up to ~1; kept in float32, the bfloat16
    output differs from float32 features only by bfloat16 rounding."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 80, 80, generator=gen).bfloat16()
    boxes = torch.tensor([[0, 1000.3, 601.7, 1203.5, 795.9]])
    want = roiops.roi_align(x.float(), boxes, 7, 1 / 16, 2, True)
    got = roiops.roi_align(x, boxes, 7, 1 / 16, 2, True)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=1e-2)
    rounded = roiops.roi_align(x.float(), boxes.bfloat16().float(), 7, 1 / 16, 2, True)
    assert (rounded - want).abs().max() > 0.1  # what keeping the precision avoids


def test_list_of_boxes_batch_column_holds_every_index_exactly():
    """bfloat16 holds integers exactly only up to 256: with 300 images the list form
    builds its [K, 5] boxes in float32 (index 257 would round to 256 in bfloat16),
    and gradients still reach each box tensor in its own dtype."""
    n = 300
    x = torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(4)).bfloat16()
    boxes = [torch.tensor([[0.0, 0.5, 3.0, 2.5]], dtype=torch.bfloat16, requires_grad=True) for _ in range(n)]
    rois = roiops._validation.rois_from_boxes("test", x, boxes)
    assert rois.dtype == torch.float32 and torch.equal(rois[:, 0], torch.arange(n, dtype=torch.float32))
    out = roiops.roi_align(x, boxes, 2, aligned=True)
    exact = torch.cat([torch.arange(n, dtype=torch.float64)[:, None], torch.tensor([[0.0, 0.5, 3.0, 2.5]] * n,
                                                                                    dtype=torch.float64)], 1)
    assert torch.equal(out, roiops.roi_align(x, exact, 2, aligned=True))
    out.float().sum().backward()
    assert all(b.grad is not None and b.grad.dtype == torch.bfloat16 for b in boxes)
    mixed = roiops._validation.rois_from_boxes("test", x[:2], [boxes[0].half(), boxes[1]])
    assert mixed.dtype == torch.float32  # promote_types(float16, bfloat16)


@pytest.mark.parametrize("op", OPS)
def test_multilevel_ops_and_pooler_take_any_box_dtype(op):
    gen = torch.Generator().manual_seed(2)
    feats = [torch.randn(2, 4, 32 >> i, 48 >> i, generator=gen).bfloat16() for i in range(3)]
    rois = roiops.testing.random_rois(20, 2, (128, 192), min_size=4, max_fraction=1.2, generator=gen)
    pooler = roiops.MultiScaleRoIPooler(3, [1 / 4, 1 / 8, 1 / 16], op, canonical_size=32)
    want = pooler([f.float() for f in feats], rois.double())
    for box_dtype in (torch.float32, torch.float64):
        fs = [f.clone().requires_grad_() for f in feats]
        r = rois.to(box_dtype).detach().requires_grad_()
        got = pooler(fs, r)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=1e-2)
        got.float().sum().backward()
        assert r.grad.dtype == box_dtype and all(f.grad.dtype == torch.bfloat16 for f in fs)


@pytest.mark.parametrize("op", ALL_OPS)
def test_autocast_bfloat16_around_conv_and_roi_op(op):
    """Under torch.autocast the conv's output is bfloat16 while boxes stay float32:
    the op runs on the bfloat16 map as it is and gradients flow to both."""
    gen = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    image = torch.randn(2, 3, 24, 24, generator=gen)
    rois = torch.tensor([[0, 1.5, 2.25, 40.0, 33.0], [1, 10.0, 4.0, 44.5, 47.0]], requires_grad=True)
    if op == "roi_align_rotated":  # the same boxes as (cx, cy, w, h, angle), turned
        rois = torch.tensor([[0, 20.75, 17.625, 38.5, 30.75, 25.0], [1, 27.25, 25.5, 34.5, 43.0, -60.0]],
                            requires_grad=True)
    fn = getattr(roiops, op)
    size = 2 if op in PS_OPS else 4  # the position-sensitive ops: 2 channels per bin
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = conv(image)
        out = fn(features, rois, size, 0.5)
    assert features.dtype == out.dtype == torch.bfloat16
    want = fn(features.detach().float(), rois.detach(), size, 0.5)
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=1e-2)
    out.float().sum().backward()
    assert conv.weight.grad is not None and rois.grad.dtype == torch.float32
