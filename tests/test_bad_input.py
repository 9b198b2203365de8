"""Bad input raises a Python exception that names the problem; odd but legal input
(non-finite, huge, empty, degenerate) gives a defined result. Never a crash."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import roiops

X = torch.randn(2, 3, 8, 9)
ROIS = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 2.0, 0.5, 7.5, 7.0]])
EMPTY = torch.zeros(0, dtype=torch.int32)

PUBLIC = [
    ("roi_align", lambda x, r, **kw: roiops.roi_align(x, r, kw.pop("size", 2), kw.pop("scale", 1.0), **kw)),
    ("roi_warp", lambda x, r, **kw: roiops.roi_warp(x, r, kw.pop("size", 2), kw.pop("scale", 1.0), **kw)),
    ("roi_pool", lambda x, r, **kw: roiops.roi_pool(x, r, kw.pop("size", 2), kw.pop("scale", 1.0), **kw)),
]
ids = [p[0] for p in PUBLIC]
# prroi_pool follows the same rules (it has no mode); the tests below that take the `op`
# fixture run it too.
PRROI = ("prroi_pool", lambda x, r, **kw: roiops.prroi_pool(x, r, kw.pop("size", 2), kw.pop("scale", 1.0), **kw))


@pytest.fixture(params=[*PUBLIC, PRROI], ids=[*ids, PRROI[0]])
def op(request):
    return request.param[1]


BAD_ARGUMENTS = [
        (X[0], ROIS, {}, ValueError, r"input must be \[N, C, H, W\]"),
        (X.long(), ROIS.long(), {}, TypeError, "input must be float16"),
        ("x", ROIS, {}, TypeError, "input must be a Tensor"),
        (X, ROIS[:, :4], {}, ValueError, r"boxes must be a \[K, 5\]"),
        (X, ROIS[0], {}, ValueError, r"boxes must be a \[K, 5\]"),
        (X, [ROIS[:, 1:]], {}, ValueError, "got 1 box tensors for a batch of 2"),
        (X, [ROIS[:, 1:], ROIS], {}, ValueError, r"boxes\[1\] must be a \[L, 4\]"),
        (X, "boxes", {}, TypeError, "boxes must be a Tensor"),
        (X, ROIS.long(), {}, TypeError, "boxes must be a floating-point tensor"),
        (X, [ROIS[:1, 1:], ROIS[:1, 1:].int()], {}, TypeError, r"boxes\[1\] must be a floating-point tensor"),
        (X, ROIS.to("meta"), {}, ValueError, "boxes are on meta"),
        (X, ROIS, {"size": 0}, ValueError, "output_size must be positive"),
        (X, ROIS, {"size": (2, -1)}, ValueError, "output_size must be positive"),
        (X, ROIS, {"size": 2.5}, TypeError, "output_size must be an int"),
        (X, ROIS, {"scale": 0.0}, ValueError, "spatial_scale must be positive"),
        (X, ROIS, {"scale": -0.25}, ValueError, "spatial_scale must be positive"),
        (X, ROIS, {"scale": math.nan}, ValueError, "spatial_scale must be positive"),
        (X, ROIS, {"scale": math.inf}, ValueError, "spatial_scale must be positive"),
]


@pytest.mark.parametrize("x,rois,kw,exc,match", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(op, x, rois, kw, exc, match):
    with pytest.raises(exc, match=match):
        op(x, rois, **kw)


@pytest.mark.parametrize("batch", [2.0, -1.0, 0.5, math.nan, math.inf])
def test_bad_batch_index_is_refused_before_any_memory_access(op, batch):
    rois = ROIS.clone()
    rois[1, 0] = batch
    with pytest.raises(ValueError, match=r"boxes\[1, 0\] \(batch index\) must be an integer in \[0, 2\)"):
        op(X, rois)


@pytest.mark.parametrize("name,fn", PUBLIC, ids=ids)
def test_unknown_mode_is_refused(name, fn):
    with pytest.raises(ValueError, match="mode must be one of"):
        fn(X, ROIS, mode="mean")


def test_unknown_sampling_is_refused():
    for fn in (roiops.roi_align, roiops.roi_warp):
        with pytest.raises(ValueError, match="sampling must be one of"):
            fn(X, ROIS, 2, sampling="bicubic")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda o: o.roi_align(X, ROIS, 1.0, 2, 2, -1, False, "median", "bilinear"), "mode must be"),
        (lambda o: o.roi_warp(X, ROIS, 1.0, 2, 2, -1, "avg", "cubic"), "sampling must be"),
        (lambda o: o.roi_pool(X, ROIS, 1.0, 0, 2, "max"), "output_size must be positive"),
        (lambda o: o.roi_pool(X, ROIS, -1.0, 2, 2, "max"), "spatial_scale must be positive"),
        (lambda o: o.roi_align(X, ROIS[:, :3], 1.0, 2, 2, -1, False, "avg", "bilinear"), r"boxes must be \[K, 5\]"),
        (lambda o: o.roi_align(X[0], ROIS, 1.0, 2, 2, -1, False, "avg", "bilinear"), r"input must be \[N, C, H, W\]"),
        (lambda o: o._roi_align_backward(torch.ones(2, 3, 3, 3), X, EMPTY, ROIS, 1.0, 2, 2, -1, False, "avg",
                                         "bilinear"), r"grad must be \[2, 3, 2, 2\]"),
        (lambda o: o._roi_pool_jvp(X, torch.zeros(2, 3, 2, 2), ROIS, 1.0, 2, 2, "max"), "argmax must be int32"),
        (lambda o: o._roi_pool_jvp(X, EMPTY, ROIS, 1.0, 2, 2, "max"), r"argmax must have the output's shape"),
    ],
)
def test_direct_op_calls_are_checked_in_cpp(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(torch.ops.roiops)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_box_pools_to_zero_with_zero_gradients(op, bad):
    rois = ROIS.clone()
    rois[0, 3] = bad
    x = X.clone().requires_grad_()
    r = rois.clone().requires_grad_()
    out = op(x, r)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out[1], op(X, ROIS[1:])[0])
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(r.grad).all()
    assert torch.equal(r.grad[0], torch.zeros(5))


@pytest.mark.parametrize("coord", [1e6, 1e12, 3e38])
def test_huge_boxes_finish_with_finite_output(op, coord):
    """Adaptive sampling is capped at 64 samples per axis, so this cannot hang."""
    rois = torch.tensor([[0, -coord, -coord, coord, coord], [1, 0.0, 0.0, coord, 3.0]])
    x = X.clone().requires_grad_()
    out = op(x, rois, size=7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shape,K", [((2, 3, 8, 9), 0), ((2, 0, 8, 9), 2), ((0, 3, 8, 9), 0),
                                     ((2, 3, 0, 9), 2), ((2, 3, 8, 0), 2)])
def test_empty_inputs_give_empty_or_zero_outputs_of_the_right_shape(op, shape, K):
    x = torch.randn(shape, requires_grad=True)
    rois = ROIS[:K].clone().requires_grad_()
    out = op(x, rois, size=(2, 3))
    assert out.shape == (K, shape[1], 2, 3)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert x.grad.shape == x.shape and rois.grad.shape == rois.shape


def test_list_of_boxes_equals_batch_index_form():
    boxes = [ROIS[ROIS[:, 0] == i, 1:] for i in range(2)]
    for _, fn in PUBLIC:
        torch.testing.assert_close(fn(X, boxes), fn(X, ROIS), atol=0, rtol=0)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    assert roiops.roi_align(X, empty, 2).shape == (0, 3, 2, 2)


def test_degenerate_and_inverted_boxes_are_defined():
    rois = torch.tensor([[0, 3.0, 3.0, 3.0, 3.0], [0, 6.0, 5.0, 2.0, 1.0], [1, 4.2, 4.2, 4.3, 4.3]])
    for name, fn in PUBLIC:
        out = fn(X, rois)
        assert torch.isfinite(out).all(), name
    # aligned=True with adaptive sampling: a zero- or negative-size box has no samples
    # and pools to 0. With a fixed sampling_ratio it is sampled where the formulas put
    # the samples (a zero-size box reads one point), as the reference states.
    out = roiops.roi_align(X, rois[:2], 2, aligned=True, sampling_ratio=-1)
    assert torch.equal(out, torch.zeros_like(out))
    from roiops import reference

    out = roiops.roi_align(X, rois[:2], 2, aligned=True, sampling_ratio=2)
    assert (out != 0).all()
    torch.testing.assert_close(out, reference.roi_align(X, rois[:2], 2, aligned=True, sampling_ratio=2))
    point = roiops.roi_align(X, rois[:1], 1, aligned=True, sampling_ratio=1)
    torch.testing.assert_close(out[0], point[0].expand(3, 2, 2))


@pytest.mark.parametrize(
    "name,params",
    [("roi_align", (2, True, "max", "bilinear")), ("roi_warp", (2, "max", "nearest")), ("roi_pool", ("max",))],
)
@pytest.mark.parametrize("channels", [3, 20], ids=["scalar-channels", "vector-channels"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_corrupted_argmax_is_never_followed_out_of_bounds(name, params, channels, layout):
    """argmax is the forward's output; an internal op handed garbage skips it (20
    channels: the 8-channel vector offsets too)."""
    ops = torch.ops.roiops
    x = torch.randn(2, channels, 8, 9).contiguous(memory_format=layout)
    out, argmax = getattr(ops, name)(x, ROIS, 1.0, 2, 2, *params)
    for bad in (2**30, -2**30, 10**6, -1, 2**31 - 1, -(2**31)):
        garbage = torch.full_like(argmax, bad)
        grad = getattr(ops, f"_{name}_backward")(torch.ones_like(out), x, garbage, ROIS, 1.0, 2, 2, *params)
        assert torch.equal(grad, torch.zeros_like(x))
        jvp = getattr(ops, f"_{name}_jvp")(x, garbage, ROIS, 1.0, 2, 2, *params)
        assert torch.equal(jvp, torch.zeros_like(out))


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_bins_larger_than_float_index_precision(mode):
    """A bin of more than 2^24 pixels (a 4097 x 4097 map pooled to 1 x 1): the max's
    position is not representable in float32, yet the gradient lands on it exactly."""
    side = 4097
    x = torch.zeros(1, 1, side, side)
    hot = side * side - 2  # odd, above 2^24
    x.view(-1)[hot] = 1.0
    x.requires_grad_()
    out = roiops.roi_pool(x, torch.tensor([[0, 0.0, 0.0, side - 1.0, side - 1.0]]), 1, mode=mode)
    out.sum().backward()
    if mode == "max":
        assert out.item() == 1.0
        assert x.grad.view(-1)[hot].item() == 1.0 and x.grad.sum().item() == 1.0
    else:
        torch.testing.assert_close(out.item(), 1.0 / side**2)


def test_roi_pool_max_refuses_maps_beyond_int32_pixel_indices():
    huge = torch.zeros(1, 1, 1, 1).expand(1, 1, 65536, 65536)  # no memory behind it
    with pytest.raises(ValueError, match="records pixel indices as int32"):
        roiops.roi_pool(huge, torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]), 1)
    assert roiops.roi_pool(huge, torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]), 1, mode="avg").item() == 0.0


@given(ratio=st.integers(-(2**63), 2**63 - 1), size=st.integers(-(2**40), 2**40))
@settings(max_examples=60)
def test_sampling_ratio_and_output_size_either_work_or_name_their_bound(ratio, size):
    """Across the whole int64 range: a value within the bounds runs (small values
    here, to stay fast), anything else is a ValueError naming the bound."""
    x, rois = torch.randn(1, 2, 4, 4), torch.tensor([[0, 0.5, 0.5, 3.0, 2.5]])
    for fn in (roiops.roi_align, roiops.roi_warp):
        if ratio > 1024:
            with pytest.raises(ValueError, match="sampling_ratio must be at most 1024"):
                fn(x, rois, 1, 1.0, ratio)
        elif ratio <= 8:
            assert fn(x, rois, 1, 1.0, ratio).shape == (1, 2, 1, 1)
    if not 0 < size <= 65536:
        with pytest.raises(ValueError, match="output_size must be"):
            roiops.roi_pool(x, rois, size)
    elif size <= 16:
        assert roiops.roi_pool(x, rois, size).shape == (1, 2, size, size)


@pytest.mark.parametrize("ratio", [1025, 4097, 46341, 65536, 10**6, 2**32 + 2])
def test_sampling_ratio_is_bounded(ratio):
    """Beyond 1024 samples per bin axis the ratio is refused, by the public ops and by
    direct calls of the registered ops (which used to truncate it to int and hang,
    wrap around or read uninitialised memory)."""
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    x = torch.randn(1, 1, 4, 4)
    match = r"sampling_ratio must be at most 1024"
    for fn in (roiops.roi_align, roiops.roi_warp):
        with pytest.raises(ValueError, match=match):
            fn(x, rois, 1, 1.0, ratio)
    with pytest.raises(ValueError, match=match):
        roiops.MultiScaleRoIPooler(1, [1.0], sampling_ratio=ratio)
    ops = torch.ops.roiops
    for mode in ("avg", "max"):
        with pytest.raises(ValueError, match=match):
            ops.roi_align(x, rois, 1.0, 1, 1, ratio, True, mode, "bilinear", True)
        with pytest.raises(ValueError, match=match):
            ops._roi_warp_backward(torch.ones(1, 1, 1, 1), x, EMPTY, rois, 1.0, 1, 1, ratio, "avg", "bilinear")
        with pytest.raises(ValueError, match=match):
            ops.roi_align_multilevel([x], rois, torch.zeros(1, dtype=torch.long), [1.0], 1, 1, ratio, True, mode,
                                     "nearest", True)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_largest_sampling_ratio_matches_the_reference(mode):
    """1024 x 1024 samples in one bin: 2^20 sample indices stay exact integers, so the
    max-mode gradient lands on the sample that won (here the last one)."""
    from roiops import reference

    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).requires_grad_()
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]])
    out = roiops.roi_align(x, rois, 1, 1.0, 1024, aligned=True, mode=mode)
    (g,) = torch.autograd.grad(out.sum(), x)
    xr = x.detach().clone().requires_grad_()
    want = reference.roi_align(xr, rois, 1, 1.0, 1024, aligned=True, mode=mode)
    (gr,) = torch.autograd.grad(want.sum(), xr)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(g, gr)


@pytest.mark.parametrize("size", [65537, (1, 2**31), 2**31, 2**40])
def test_output_size_is_bounded(size):
    x, rois = torch.randn(1, 1, 4, 4), torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    for fn in (roiops.roi_align, roiops.roi_warp, roiops.roi_pool):
        with pytest.raises(ValueError, match="output_size must be at most 65536"):
            fn(x, rois, size)
    ph, pw = (size, size) if isinstance(size, int) else size
    if max(ph, pw) < 2**63:
        with pytest.raises(ValueError, match="output_size must be at most 65536"):
            torch.ops.roiops.roi_pool(x, rois, 1.0, ph, pw, "max", True)


def test_maps_of_2_to_the_31_rows_are_refused():
    huge = torch.zeros(1, 1, 1, 1).expand(1, 1, 2**31, 2)  # no memory behind it
    for fn in (roiops.roi_align, roiops.roi_warp, roiops.roi_pool):
        with pytest.raises(ValueError, match="height and width must be below 2"):
            fn(huge, torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]), 1, mode="avg")
        with pytest.raises(ValueError, match="height and width must be below 2"):
            fn(huge.transpose(2, 3), torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]), 1, mode="avg")


@pytest.mark.parametrize("name,fn", PUBLIC, ids=ids)
def test_maps_just_below_2_to_the_31_rows_read_the_right_pixels(name, fn):
    """H = 2^31 - 1 through expand(): planar maps are pooled from a per-RoI tile
    whose index no longer allocates per map row (8 GB per thread before), and boxes
    at the bottom read the bottom rows."""
    H = 2**31 - 1
    x = torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1).expand(1, 2, H, 1)
    rois = torch.tensor([[0, 0.0, 0.0, 0.0, 4.0], [0, 0.0, H - 5.0, 0.0, H - 1.0], [0, 0.0, H + 10.0, 0.0, H + 20.0]],
                        dtype=torch.float64)
    out = fn(x, rois, size=2)
    want = torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1).expand(2, 2, 2, 2)
    assert torch.equal(out[:2], want)
    assert torch.equal(out[2], torch.zeros(2, 2, 2))


@pytest.mark.parametrize("multilevel", [False, True])
def test_roi_pool_jvp_on_an_empty_map_with_a_forged_argmax(multilevel):
    """W = 0 with argmax >= 0 used to divide by W (SIGFPE, the process died)."""
    ops = torch.ops.roiops
    x = torch.zeros(2, 3, 4, 0)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    argmax = torch.zeros(1, 3, 2, 2, dtype=torch.int32)
    if multilevel:
        out = ops._roi_pool_multilevel_jvp([x, x], argmax, rois, torch.tensor([1]), [1.0, 0.5], 2, 2, "max")
    else:
        out = ops._roi_pool_jvp(x, argmax, rois, 1.0, 2, 2, "max")
    assert torch.equal(out, torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("side", [4096, 8192])
def test_roi_pool_avg_stays_exact_over_huge_bins(side):
    """A float32 running sum stops growing at 2^24 terms: the mean of an all-ones
    8192 x 8192 bin was 0.25. Now it is 1, and the mean of a ramp is exact."""
    ones = torch.ones(1, 1, 1, 1).expand(1, 2, side, side)
    rois = torch.tensor([[0, 0.0, 0.0, side - 1.0, side - 1.0]])
    assert torch.equal(roiops.roi_pool(ones, rois, 1, mode="avg"), torch.ones(1, 2, 1, 1))
    ramp = torch.arange(side, dtype=torch.float32).reshape(1, 1, 1, side).expand(1, 1, side, side)
    torch.testing.assert_close(roiops.roi_pool(ramp, rois, 1, mode="avg").item(), (side - 1) / 2, rtol=1e-6, atol=0)


def test_roi_pool_avg_counts_more_than_2_to_the_31_pixels():
    """46341^2 > 2^31 pixels in one bin: the count is int64 (an int wrapped negative)."""
    side = 46341
    ones = torch.ones(1, 1, 1, 1).expand(1, 1, side, side)
    out = roiops.roi_pool(ones, torch.tensor([[0, 0.0, 0.0, side - 1.0, side - 1.0]]), 1, mode="avg")
    assert out.item() == 1.0


META = torch.zeros(2, 3, 8, 9, device="meta")


@pytest.mark.parametrize(
    "call",
    [
        lambda o: o.roi_align(X, ROIS.to("meta"), 1.0, 2, 2, 2, True, "avg", "bilinear", True),
        lambda o: o.roi_warp(META, ROIS, 1.0, 2, 2, 2, "max", "bilinear", True),
        lambda o: o.roi_pool(META, ROIS, 1.0, 2, 2, "max", True),
        lambda o: o._roi_align_backward(torch.ones(2, 3, 2, 2, device="meta"), X, EMPTY, ROIS, 1.0, 2, 2, 2, True,
                                        "avg", "bilinear"),
        lambda o: o._roi_align_backward_rois(torch.ones(2, 3, 2, 2), META, EMPTY, ROIS, 1.0, 2, 2, 2, True, "avg",
                                             "bilinear"),
        lambda o: o._roi_pool_jvp(META, EMPTY.to("meta"), ROIS, 1.0, 2, 2, "avg"),
        lambda o: o.roi_align_multilevel([X, META], ROIS, torch.zeros(2, dtype=torch.long), [1.0, 0.5], 2, 2, 2, True,
                                         "avg", "bilinear", True),
        lambda o: o.roi_pool_multilevel([X], ROIS, torch.zeros(2, dtype=torch.long, device="meta"), [1.0], 2, 2,
                                        "max", True),
        lambda o: o._roi_warp_multilevel_backward(torch.ones(2, 3, 2, 2), [META], EMPTY, ROIS,
                                                  torch.zeros(2, dtype=torch.long), [1.0], 2, 2, 2, "avg", "nearest"),
    ],
)
def test_mixing_meta_and_cpu_tensors_in_a_direct_call_raises(call):
    """Such a call dispatches to the fake kernel, which used to return
    uninitialised CPU memory."""
    with pytest.raises(ValueError, match="are on (meta|cpu) but .* are on (cpu|meta)"):
        call(torch.ops.roiops)


def test_multilevel_maps_of_different_dtypes_are_refused():
    ops = torch.ops.roiops
    feats = [torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4, dtype=torch.float64)]
    with pytest.raises(TypeError, match="every level must have the same dtype"):
        ops.roi_align_multilevel(feats, torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]]), torch.tensor([1]), [1.0, 0.5], 2, 2,
                                 2, True, "avg", "bilinear", True)


# The position-sensitive ops: the same rules, plus C a multiple of PH * PW. X_PS has 2
# channels for each bin of the default 2 x 2 output.
X_PS = torch.randn(2, 8, 8, 9)
PS_PUBLIC = [
    ("ps_roi_align", lambda x, r, **kw: roiops.ps_roi_align(x, r, kw.pop("size", 2), kw.pop("scale", 1.0), **kw)),
    ("ps_roi_pool", lambda x, r, **kw: roiops.ps_roi_pool(x, r, kw.pop("size", 2), kw.pop("scale", 1.0), **kw)),
]
ps_ids = [p[0] for p in PS_PUBLIC]


@pytest.fixture(params=PS_PUBLIC, ids=ps_ids)
def ps_op(request):
    return request.param[1]


@pytest.mark.parametrize("x,rois,kw,exc,match", BAD_ARGUMENTS)
def test_position_sensitive_bad_arguments_raise_clear_errors(ps_op, x, rois, kw, exc, match):
    with pytest.raises(exc, match=match):
        ps_op(x, rois, **kw)


@pytest.mark.parametrize("channels,size", [(3, 2), (6, 2), (8, (2, 3)), (1, (1, 2))])
def test_position_sensitive_channels_must_be_a_multiple_of_the_bins(ps_op, channels, size):
    x = torch.randn(2, channels, 8, 9)
    with pytest.raises(ValueError, match=r"input channels \(\d+\) must be a multiple of output_size"):
        ps_op(x, ROIS, size=size)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda o: o.ps_roi_align(X, ROIS, 1.0, 2, 2, -1), r"input channels \(3\) must be a multiple of .* = 4"),
        (lambda o: o.ps_roi_pool(X, ROIS, 1.0, 2, 2), r"input channels \(3\) must be a multiple of .* = 4"),
        (lambda o: o._ps_roi_pool_jvp(X, EMPTY, ROIS, 1.0, 2, 2), r"must be a multiple of"),
        (lambda o: o._ps_roi_align_backward(torch.ones(2, 8, 2, 2), X_PS, EMPTY, ROIS, 1.0, 2, 2, -1),
         r"grad must be \[2, 2, 2, 2\]"),
        (lambda o: o._ps_roi_pool_backward(torch.ones(2, 2, 2, 2), X, EMPTY, ROIS, 1.0, 2, 2), r"must be a multiple"),
        (lambda o: o.ps_roi_align(X_PS, ROIS, 1.0, 2, 2, 1025), "sampling_ratio must be at most 1024"),
        (lambda o: o.ps_roi_pool(X_PS, ROIS[:, :3], 1.0, 2, 2), r"boxes must be \[K, 5\]"),
        (lambda o: o.ps_roi_pool(X_PS.to("meta"), ROIS.to("meta"), 1.0, 2, 3), "must be a multiple of"),
    ],
)
def test_position_sensitive_direct_op_calls_are_checked(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.ops.roiops)


@pytest.mark.parametrize("batch", [2.0, -1.0, 0.5, math.nan])
def test_position_sensitive_bad_batch_index_is_refused(ps_op, batch):
    rois = ROIS.clone()
    rois[1, 0] = batch
    with pytest.raises(ValueError, match=r"boxes\[1, 0\] \(batch index\) must be an integer in \[0, 2\)"):
        ps_op(X_PS, rois)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_position_sensitive_non_finite_box_pools_to_zero(ps_op, bad):
    rois = ROIS.clone()
    rois[0, 3] = bad
    x = X_PS.clone().requires_grad_()
    r = rois.clone().requires_grad_()
    out = ps_op(x, r)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out[1], ps_op(X_PS, ROIS[1:])[0])
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(r.grad).all()
    assert torch.equal(r.grad[0], torch.zeros(5))


@pytest.mark.parametrize("coord", [1e6, 1e12, 3e38])
def test_position_sensitive_huge_boxes_finish_with_finite_output(ps_op, coord):
    rois = torch.tensor([[0, -coord, -coord, coord, coord], [1, 0.0, 0.0, coord, 3.0]])
    x = torch.randn(2, 49, 8, 9, requires_grad=True)
    out = ps_op(x, rois, size=7)
    assert out.shape == (2, 1, 7, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shape,K", [((2, 6, 8, 9), 0), ((2, 0, 8, 9), 2), ((0, 6, 8, 9), 0),
                                     ((2, 6, 0, 9), 2), ((2, 6, 8, 0), 2)])
def test_position_sensitive_empty_inputs_give_empty_or_zero_outputs(ps_op, shape, K):
    x = torch.randn(shape, requires_grad=True)
    rois = ROIS[:K].clone().requires_grad_()
    out = ps_op(x, rois, size=(2, 3))
    assert out.shape == (K, shape[1] // 6, 2, 3)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert x.grad.shape == x.shape and rois.grad.shape == rois.shape


def test_position_sensitive_degenerate_and_inverted_boxes_are_defined():
    """Inverted boxes pool to 0 in ps_roi_align (no samples: aligned=True has no minimum
    size) and read one pixel per bin in ps_roi_pool (its size is at least 1), as the
    reference states."""
    from roiops import reference

    rois = torch.tensor([[0, 3.0, 3.0, 3.0, 3.0], [0, 6.0, 5.0, 2.0, 1.0], [1, 4.2, 4.2, 4.3, 4.3]])
    for name, fn in PS_PUBLIC:
        out = fn(X_PS, rois)
        assert torch.isfinite(out).all(), name
        torch.testing.assert_close(out, getattr(reference, name)(X_PS, rois, 2), atol=1e-6, rtol=1e-6)
    assert torch.equal(roiops.ps_roi_align(X_PS, rois[1:2], 2), torch.zeros(1, 2, 2, 2))
    assert (roiops.ps_roi_pool(X_PS, rois[1:2], 2) != 0).all()


# prroi_pool's own checks and cases (the `op` fixture's tests run it too): zero-area
# bins and inverted boxes pool to 0 with zero gradients.
def prroi_pool(x, r, size=2, scale=1.0):
    return roiops.prroi_pool(x, r, size, scale)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda o: o.prroi_pool(X, ROIS, 1.0, 0, 2, True), "output_size must be positive"),
        (lambda o: o.prroi_pool(X, ROIS, -1.0, 2, 2, True), "spatial_scale must be positive"),
        (lambda o: o.prroi_pool(X, ROIS[:, :3], 1.0, 2, 2, True), r"boxes must be \[K, 5\]"),
        (lambda o: o.prroi_pool(X[0], ROIS, 1.0, 2, 2, True), r"input must be \[N, C, H, W\]"),
        (lambda o: o.prroi_pool(X, ROIS, 1.0, 65537, 2, True), "output_size must be at most 65536"),
        (lambda o: o._prroi_pool_backward(torch.ones(2, 3, 3, 3), X, EMPTY, ROIS, 1.0, 2, 2),
         r"grad must be \[2, 3, 2, 2\]"),
        (lambda o: o._prroi_pool_backward_rois(torch.ones(2, 3, 3, 3), X, EMPTY, ROIS, 1.0, 2, 2),
         r"grad must be \[2, 3, 2, 2\]"),
        (lambda o: o._prroi_pool_jvp(X, EMPTY, ROIS[:, 1:], 1.0, 2, 2), r"boxes must be \[K, 5\]"),
        (lambda o: o.prroi_pool(X.to("meta"), ROIS, 1.0, 2, 2, True), "boxes are on cpu but inputs are on meta"),
    ],
)
def test_prroi_pool_direct_op_calls_are_checked(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(torch.ops.roiops)


def test_prroi_pool_maps_of_2_to_the_31_rows_are_refused():
    huge = torch.zeros(1, 1, 1, 1).expand(1, 1, 2**31, 2)  # no memory behind it
    with pytest.raises(ValueError, match="height and width must be below 2"):
        prroi_pool(huge, torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]), 1)


def test_prroi_pool_degenerate_and_inverted_boxes_are_defined():
    """Zero-size and inverted boxes have bins of zero area: 0, with zero gradients. A box
    smaller than a pixel is the mean of f over it (the reference's)."""
    from roiops import reference

    rois = torch.tensor([[0, 3.0, 3.0, 3.0, 3.0], [0, 6.0, 5.0, 2.0, 1.0], [1, 4.2, 4.2, 4.3, 4.3]],
                        requires_grad=True)
    x = X.clone().requires_grad_()
    out = prroi_pool(x, rois)
    assert torch.equal(out[:2], torch.zeros_like(out[:2]))
    torch.testing.assert_close(out, reference.prroi_pool(X, rois.detach(), 2), atol=1e-6, rtol=1e-6)
    out.sum().backward()
    assert not rois.grad[:2].any() and rois.grad[2].abs().sum() > 0


# roi_align_rotated's own checks and cases: [K, 6] boxes (batch, cx, cy, w, h, angle).
ROTATED = torch.tensor([[0, 3.5, 3.0, 5.0, 4.0, 30.0], [1, 4.75, 3.75, 5.5, 6.5, -120.0]])


@pytest.mark.parametrize(
    "x,rois,kw,exc,match",
    [
        (X, ROIS, {}, ValueError, r"boxes must be a \[K, 6\] Tensor \(batch_index, cx, cy, w, h, angle\)"),
        (X, [ROTATED[:1, 1:], ROTATED[1:, 1:5]], {}, ValueError, r"boxes\[1\] must be a \[L, 5\]"),
        (X, ROTATED.long(), {}, TypeError, "boxes must be a floating-point tensor"),
        (X[0], ROTATED, {}, ValueError, r"input must be \[N, C, H, W\]"),
        (X, ROTATED, {"output_size": 0}, ValueError, "output_size must be positive"),
        (X, ROTATED, {"spatial_scale": math.nan}, ValueError, "spatial_scale must be positive"),
        (X, ROTATED, {"sampling_ratio": 1025}, ValueError, "sampling_ratio must be at most 1024"),
    ],
)
def test_roi_align_rotated_bad_arguments_raise_clear_errors(x, rois, kw, exc, match):
    kw = {"output_size": 2, **kw}
    with pytest.raises(exc, match=match):
        roiops.roi_align_rotated(x, rois, **kw)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda o: o.roi_align_rotated(X, ROIS, 1.0, 2, 2, 2, True, False, True), r"boxes must be \[K, 6\]"),
        (lambda o: o.roi_align_rotated(X, ROTATED, 1.0, 2, 2, 1025, True, False, True),
         "sampling_ratio must be at most 1024"),
        (lambda o: o._roi_align_rotated_backward(torch.ones(2, 3, 3, 3), X, EMPTY, ROTATED, 1.0, 2, 2, 2, True, False),
         r"grad must be \[2, 3, 2, 2\]"),
        (lambda o: o._roi_align_rotated_backward_rois(torch.ones(2, 3, 2, 2), X, EMPTY, ROIS, 1.0, 2, 2, 2, True,
                                                      False), r"boxes must be \[K, 6\]"),
        (lambda o: o._roi_align_rotated_jvp(X, EMPTY, ROTATED[:, 1:], 1.0, 2, 2, 2, True, False),
         r"boxes must be \[K, 6\]"),
        (lambda o: o.roi_align_rotated(X.to("meta"), ROTATED, 1.0, 2, 2, 2, True, False, True),
         "boxes are on cpu but inputs are on meta"),
    ],
)
def test_roi_align_rotated_direct_op_calls_are_checked(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(torch.ops.roiops)


@pytest.mark.parametrize("batch", [2.0, -1.0, 0.5, math.nan])
def test_roi_align_rotated_bad_batch_index_is_refused(batch):
    rois = ROTATED.clone()
    rois[1, 0] = batch
    with pytest.raises(ValueError, match=r"boxes\[1, 0\] \(batch index\) must be an integer in \[0, 2\)"):
        roiops.roi_align_rotated(X, rois, 2)


def test_roi_align_rotated_odd_boxes_are_defined():
    """Non-finite values (angle included) pool to 0 with zero gradients; zero and negative
    sizes pool to 0 with adaptive sampling; huge angles and huge boxes stay finite; all as
    the reference states."""
    from roiops import reference

    rois = torch.tensor([
        [0, 3.0, 3.0, 4.0, 4.0, math.nan],
        [0, math.inf, 3.0, 4.0, 4.0, 10.0],
        [1, 3.0, 3.0, 0.0, 4.0, 10.0],
        [1, 3.0, 3.0, -2.0, -4.0, 10.0],
        [0, 3.0, 3.0, 4.0, 4.0, 1e300],
        [1, 1e12, -1e12, 3e12, 1e6, 45.0],
        [0, 4.0, 3.5, 6.0, 5.0, -1e6 - 30.0],
    ], dtype=torch.float64, requires_grad=True)
    x = X.double().requires_grad_()
    out = roiops.roi_align_rotated(x, rois, 2)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:4], torch.zeros_like(out[:4])) and out[6].abs().sum() > 0
    torch.testing.assert_close(out, reference.roi_align_rotated(X.double(), rois.detach(), 2))
    out.sum().backward()
    assert torch.isfinite(rois.grad).all() and not rois.grad[:4].any()
    assert torch.isfinite(x.grad).all()
