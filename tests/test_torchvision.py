"""Where roiops overlaps torchvision (roi_align avg/bilinear, roi_pool max, ps_roi_align,
ps_roi_pool) the values and gradients are torchvision's."""

import pytest
import torch

torchvision = pytest.importorskip("torchvision", reason="needs torchvision: pip install roiops[models]")

from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from roi_cases import cases  # noqa: E402

import roiops  # noqa: E402
from roiops import reference  # noqa: E402


def ps_roi_pool_bins_end_inside(rois, scale, H, W):
    """Whether every ps_roi_pool bin ends before the last row and column. Beyond them
    torchvision's backward clips bins to [0, H] where its forward clips to [0, H - 1], so
    its gradient is not its forward's adjoint there (it fails its own gradcheck);
    roiops' is (SEMANTICS.md)."""
    c = reference._round_half_away(rois[:, 1:].double() * scale)
    x_end = torch.maximum(c[:, 2], c[:, 0] + 1)
    y_end = torch.maximum(c[:, 3], c[:, 1] + 1)
    return bool((x_end <= W - 1).all() and (y_end <= H - 1).all())


def tv_call(case, x, r):
    kw = case.kwargs
    if case.op == "roi_align":
        return torchvision.ops.roi_align(x, r, kw["output_size"], kw["spatial_scale"],
                                         kw["sampling_ratio"], kw["aligned"])
    return torchvision.ops.roi_pool(x, r, kw["output_size"], kw["spatial_scale"])


# Finite features only: torchvision's roi_pool max skips a NaN unless it comes first,
# where roiops (SEMANTICS.md) propagates it as torch.amax does.
@given(cases(op=st.sampled_from(["roi_align", "roi_pool"]),
             dtype=st.sampled_from([torch.float64, torch.float32]), specials=False))
def test_values_and_gradients_match_torchvision(case):
    kw = case.kwargs
    case.rois = case.rois.to(case.input.dtype)  # torchvision's kernels want one dtype
    if case.op == "roi_align":
        kw.update(mode="avg", sampling="bilinear")
    else:
        kw["mode"] = "max"
    # torchvision's adaptive grid has no cap; stay below ours (64 samples per axis).
    extent = (case.rois[:, 3:] - case.rois[:, 1:3]).abs().max() if len(case.rois) else 0
    assume(float(extent) * kw["spatial_scale"] + 2 < 64)
    # torchvision's CPU roi_align raises on inverted boxes with aligned=True (a negative
    # sampling grid); roiops pools them to zeros (tests/test_bad_input.py).
    assume(not (case.rois[:, 3:] < case.rois[:, 1:3]).any())
    x = case.input.clone().requires_grad_()
    tx = case.input.clone().requires_grad_()
    out = case.run(roiops, x)
    expected = tv_call(case, tx, case.rois)
    tol = 1e-10 if x.dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x.grad, tx.grad, atol=tol * 10, rtol=tol * 10)


# torchvision computes the geometry in the features' dtype with the scale rounded to it;
# roiops in float64 (SEMANTICS.md). In float32 a scale of 1/3 moves rounding ties of
# ps_roi_pool's box (4.5 / 3 is 1.4999999999999998 in float64, 1.5000000 in float32), so
# float32 cases take the scales that float32 holds exactly.
@given(cases(op=st.sampled_from(["ps_roi_align", "ps_roi_pool"]),
             dtype=st.sampled_from([torch.float64, torch.float32]), specials=False))
def test_position_sensitive_values_and_gradients_match_torchvision(case):
    kw = case.kwargs
    case.rois = case.rois.to(case.input.dtype)
    assume(case.input.dtype == torch.float64 or kw["spatial_scale"] != 1 / 3)
    extent = (case.rois[:, 3:] - case.rois[:, 1:3]).abs().max() if len(case.rois) else 0
    assume(float(extent) * kw["spatial_scale"] + 2 < 64)
    if case.op == "ps_roi_align":
        # torchvision divides by the sample count: negative for inverted boxes, 0 (a NaN
        # output) for an empty one with adaptive sampling; roiops pools both to zeros
        # (tests/test_bad_input.py). Extents as both geometries compute them (roiops in
        # float64, torchvision in the features' dtype): a 1e-28 wide box is empty in both.
        for dtype in (torch.float64, case.input.dtype):
            c = case.rois[:, 1:].to(dtype) * kw["spatial_scale"]
            extent = (c[:, 2:] - 0.5) - (c[:, :2] - 0.5)
            assume(bool((extent > 0).all()) if kw["sampling_ratio"] <= 0 else bool((extent >= 0).all()))
    x = case.input.clone().requires_grad_()
    tx = case.input.clone().requires_grad_()
    out = case.run(roiops, x)
    expected = getattr(torchvision.ops, case.op)(tx, case.rois, **kw)
    tol = 1e-10 if x.dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
    if case.op == "ps_roi_pool" and not ps_roi_pool_bins_end_inside(case.rois, kw["spatial_scale"],
                                                                    *case.input.shape[2:]):
        return
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x.grad, tx.grad, atol=tol * 10, rtol=tol * 10)


def test_torchvision_ps_roi_pool_gradient_is_not_its_forwards_adjoint_at_the_border():
    """Box [0, 0, 3, 3] on a 3 x 3 map: bin row 1 is [1, 3), which the forward clips to
    [1, 2) and torchvision's backward to [1, 3). roiops' gradient passes gradcheck."""
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(roiops.ps_roi_pool(x, rois, 2), torchvision.ops.ps_roi_pool(x, rois, 2))
    assert not torch.autograd.gradcheck(lambda x: torchvision.ops.ps_roi_pool(x, rois, 2), (x,),
                                        raise_exception=False)
    assert torch.autograd.gradcheck(lambda x: roiops.ps_roi_pool(x, rois, 2), (x,))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_detection_sized_problem_matches_torchvision(fmt):
    """Float32 at detection sizes, where the kernels' vector paths run: 8 x 8 register
    transposes of NCHW outputs and gradients, 8-channel argmax offsets; 21 channels
    leave a remainder of 5 for the scalar loops."""
    torch.manual_seed(0)
    x = torch.randn(2, 21, 50, 84).contiguous(memory_format=fmt)
    xy = torch.rand(128, 2) * torch.tensor([1300.0, 780.0])
    wh = torch.rand(128, 2) * 400 + 4
    rois = torch.cat([torch.randint(0, 2, (128, 1)).float(), xy, xy + wh], 1)
    calls = [(lambda ops, t, sr=sr, aligned=aligned: ops.roi_align(t, rois, 7, 1 / 16, sr, aligned), 2e-5)
             for sr, aligned in [(0, False), (2, True)]]
    calls.append((lambda ops, t: ops.roi_pool(t, rois, 7, 1 / 16), 0))
    for call, tol in calls:
        xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, expected = call(roiops, xr), call(torchvision.ops, xt)
        torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
        g = torch.randn_like(expected)
        out.backward(g)
        expected.backward(g)
        torch.testing.assert_close(xr.grad, xt.grad, atol=10 * tol, rtol=10 * tol)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_rfcn_sized_position_sensitive_problem_matches_torchvision(fmt):
    """R-FCN's shape in float32: 7 x 7 bins of 10 channels each (490 channels) over a
    stride-16 map, where the planar forward copies whole plane blocks bin-major and
    the channels-last one reads channels 49 apart. Boxes end inside the map, where
    torchvision's ps_roi_pool gradient is its forward's adjoint."""
    torch.manual_seed(0)
    x = torch.randn(2, 490, 38, 50).contiguous(memory_format=fmt)
    xy = torch.rand(96, 2) * torch.tensor([400.0, 250.0])
    wh = torch.rand(96, 2) * 300 + 8
    rois = torch.cat([torch.randint(0, 2, (96, 1)).float(), xy, xy + wh], 1)
    assert ps_roi_pool_bins_end_inside(rois, 1 / 16, 38, 50)
    for name, args in (("ps_roi_align", (7, 1 / 16, 2)), ("ps_roi_pool", (7, 1 / 16))):
        xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = getattr(roiops, name)(xr, rois, *args)
        expected = getattr(torchvision.ops, name)(xt, rois, *args)
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
        g = torch.randn_like(expected)
        out.backward(g)
        expected.backward(g)
        torch.testing.assert_close(xr.grad, xt.grad, atol=2e-4, rtol=2e-4)
