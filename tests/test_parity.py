"""Every op (the position-sensitive ones included), mode, sampling, dtype and memory
format agrees with roiops.reference:
forward values, input gradients and box gradients, on random problems that include
boxes inside, across and outside the map, degenerate and inverted boxes."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from roi_cases import ALL_OPS, DTYPES, TOLERANCE, Case, cases, coordinate, kernel_grads, reference_grads
from torch._prims_common import suggest_memory_format

import roiops
from roiops import reference


def assert_close(actual, expected, dtype, what, case):
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(
        actual.to(expected.dtype), expected, atol=atol, rtol=rtol, equal_nan=True,
        msg=lambda m: f"{what} of {case}:\n{m}",
    )


@given(cases(op=st.sampled_from(ALL_OPS)))
def test_forward_matches_reference(case):
    out = case.run(roiops)
    expected = case.run(reference)
    assert out.dtype == case.input.dtype
    assert out.shape == expected.shape
    assert_close(out, expected, case.input.dtype, "output", case)


@given(cases(op=st.sampled_from(ALL_OPS)), st.integers(0, 2**31 - 1))
def test_gradients_match_reference(case, seed):
    gen = torch.Generator().manual_seed(seed)
    K, C = case.rois.shape[0], case.output_channels
    ph, pw = roiops._validation.output_size_pair("test", case.kwargs["output_size"])
    grad_out = torch.randn(K, C, ph, pw, generator=gen, dtype=torch.float64).to(case.input.dtype)
    gx, gr = kernel_grads(case, grad_out)
    ex, er = reference_grads(case, grad_out)
    assert gx.dtype == case.input.dtype and gx.shape == case.input.shape
    assert gr.dtype == case.rois.dtype and gr.shape == case.rois.shape
    assert_close(gx, ex, case.input.dtype, "input gradient", case)
    if not torch.isfinite(case.input).all():
        return  # box gradients multiply pixel differences: inf - inf has no stable value
    # Box gradients sum over channels and samples: scale the tolerance by the count,
    # and by the rounding of the result to the boxes' dtype.
    atol, rtol = TOLERANCE[case.input.dtype]
    rtol = max(rtol, torch.finfo(case.rois.dtype).eps)
    scale = max(1.0, float(er.abs().max()) if er.numel() else 1.0)
    torch.testing.assert_close(gr.double(), er.double(), atol=max(atol, rtol) * scale * 4, rtol=rtol * 4,
                               msg=lambda m: f"box gradient of {case}:\n{m}")


@given(cases(op=st.sampled_from(ALL_OPS)), st.sampled_from(["channels_last", "empty_channels_last", "nchw"]))
def test_output_memory_format_is_pytorchs_choice(case, layout):
    """Output and input gradient take the format PyTorch's own ops would give
    (suggest_memory_format), including ambiguous shapes such as [N, C, 1, 1] made
    channels_last, where a strict is-it-channels_last test says NCHW."""
    x = case.input.contiguous()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "empty_channels_last":
        x = torch.empty(x.shape, dtype=x.dtype, memory_format=torch.channels_last).copy_(x)
    expected = suggest_memory_format(x)
    out = case.run(roiops, x)
    assert out.is_contiguous(memory_format=expected)
    # A second oracle, PyTorch's own interpolate. torch 2.4's suggest_memory_format calls
    # some degenerate channels_last tensors ([N, 1, H, 1]) contiguous where its interpolate
    # keeps them channels_last; torch 2.11 and later (checked) agree with themselves.
    if torch.__version__ >= "2.11":
        assert suggest_memory_format(torch.nn.functional.interpolate(x.float(), size=(2, 2))) == expected
    x = x.clone().requires_grad_()
    case.run(roiops, x).sum().backward()
    assert x.grad.is_contiguous(memory_format=expected)


def test_ambiguous_channels_last_shape_gives_channels_last_output():
    x = torch.empty(2, 3, 1, 1, memory_format=torch.channels_last).normal_()
    rois = torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]])
    for fn in (roiops.roi_align, roiops.roi_warp, roiops.roi_pool):
        out = fn(x, rois, 2)
        assert out.stride() == torch.nn.functional.interpolate(x, size=(2, 2)).stride() == (12, 1, 6, 3)


@given(cases(op=st.sampled_from(ALL_OPS), dtype=st.sampled_from(DTYPES[:2])))
def test_strided_and_expanded_inputs_read_in_place(case):
    """Non-contiguous views give the same result as their contiguous copies."""
    x = case.input
    wide = torch.randn(x.shape[0], 2 * x.shape[1], x.shape[2], x.shape[3] + 3, dtype=x.dtype)
    view = wide[:, ::2, :, 1 : 1 + x.shape[3]]
    view.copy_(x)
    torch.testing.assert_close(case.run(roiops, view), case.run(roiops, x), atol=0, rtol=0, equal_nan=True)
    expanded = x[:1].expand_as(x)
    torch.testing.assert_close(case.run(roiops, expanded), case.run(roiops, expanded.contiguous()),
                               atol=0, rtol=0, equal_nan=True)


@given(cases(op=st.sampled_from(ALL_OPS), dtype=st.just(torch.float32)))
def test_reduced_precision_tracks_float32(case):
    """bf16/fp16 kernels accumulate in float32: their error is only the input and
    output rounding, never an accumulated one."""
    out32 = case.run(roiops)
    for dt, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)):
        x = case.input.to(dt)
        r = case.rois.to(dt)
        exact = case.run(roiops, x.float(), r.float())
        got = case.run(roiops, x, r).float()
        torch.testing.assert_close(got, exact, atol=tol, rtol=tol, equal_nan=True)
    assert out32.dtype == torch.float32


extreme = st.one_of(coordinate, st.sampled_from([1e6, -1e6, 3e12, -3e12, math.inf, -math.inf, math.nan]))


@given(st.integers(0, 6), st.integers(0, 6), st.integers(1, 3), st.integers(1, 3),
       st.lists(st.tuples(*[extreme] * 4), max_size=4), st.sampled_from([1.0, 0.5, 1 / 3]),
       st.sampled_from(["nchw", "channels_last"]), st.integers(0, 2**31 - 1))
def test_prroi_pool_extreme_boxes_and_empty_maps_match_reference(H, W, ph, pw, boxes, scale, layout, seed):
    """prroi_pool against the reference in float64 on boxes that are huge, non-finite,
    inverted or degenerate, and on maps with no row or column: values, input and box
    gradients (a non-finite box pools to 0 with zero gradients)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, H, W, generator=gen, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[i % 2, *b] for i, b in enumerate(boxes)], dtype=torch.float64).reshape(len(boxes), 5)
    case = Case("prroi_pool", x, rois, dict(output_size=(ph, pw), spatial_scale=scale))
    out, expected = case.run(roiops), case.run(reference)
    assert_close(out, expected, torch.float64, "output", case)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (gx, gr), (ex, er) = kernel_grads(case, grad_out), reference_grads(case, grad_out)
    assert_close(gx, ex, torch.float64, "input gradient", case)
    # Box gradients are sums over pixels of a bin: relative to the largest one.
    torch.testing.assert_close(gr, er, atol=1e-9 * max(1.0, float(er.abs().max()) if er.numel() else 1.0),
                               rtol=1e-7, msg=lambda m: f"box gradient of {case}:\n{m}")
    assert torch.isfinite(gr).all()
