"""Every op, mode, sampling, dtype and memory format agrees with roiops.reference:
forward values, input gradients and box gradients, on random problems that include
boxes inside, across and outside the map, degenerate and inverted boxes."""

import torch
from hypothesis import given
from hypothesis import strategies as st
from roi_cases import DTYPES, OPS, TOLERANCE, cases, kernel_grads, reference_grads

import roiops
from roiops import reference


def assert_close(actual, expected, dtype, what, case):
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(
        actual.to(expected.dtype), expected, atol=atol, rtol=rtol,
        msg=lambda m: f"{what} of {case}:\n{m}",
    )


@given(cases())
def test_forward_matches_reference(case):
    out = case.run(roiops)
    expected = case.run(reference)
    assert out.dtype == case.input.dtype
    assert out.shape == expected.shape
    assert_close(out, expected, case.input.dtype, "output", case)


@given(cases(), st.integers(0, 2**31 - 1))
def test_gradients_match_reference(case, seed):
    gen = torch.Generator().manual_seed(seed)
    K, C = case.rois.shape[0], case.input.shape[1]
    ph, pw = roiops._validation.output_size_pair("test", case.kwargs["output_size"])
    grad_out = torch.randn(K, C, ph, pw, generator=gen, dtype=torch.float64).to(case.input.dtype)
    gx, gr = kernel_grads(case, grad_out)
    ex, er = reference_grads(case, grad_out)
    assert gx.dtype == case.input.dtype and gx.shape == case.input.shape
    assert_close(gx, ex, case.input.dtype, "input gradient", case)
    # Box gradients sum over channels and samples: scale the tolerance by the count.
    atol, rtol = TOLERANCE[case.input.dtype]
    scale = max(1.0, float(er.abs().max()) if er.numel() else 1.0)
    torch.testing.assert_close(gr.to(er.dtype), er, atol=atol * scale * 4, rtol=rtol * 4,
                               msg=lambda m: f"box gradient of {case}:\n{m}")


@given(cases(channels_last=True))
def test_channels_last_in_channels_last_out(case):
    """A strictly channels_last input (not also NCHW-contiguous, which tiny shapes
    are) gives a channels_last output and input gradient, with no layout copy."""
    strict = not case.input.is_contiguous()
    out = case.run(roiops)
    assert out.is_contiguous(memory_format=torch.channels_last if strict else torch.contiguous_format)
    x = case.input.clone().requires_grad_()
    case.run(roiops, x).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last if strict else torch.contiguous_format)


@given(cases(dtype=st.sampled_from(DTYPES[:2])))
def test_strided_and_expanded_inputs_read_in_place(case):
    """Non-contiguous views give the same result as their contiguous copies."""
    x = case.input
    wide = torch.randn(x.shape[0], 2 * x.shape[1], x.shape[2], x.shape[3] + 3, dtype=x.dtype)
    view = wide[:, ::2, :, 1 : 1 + x.shape[3]]
    view.copy_(x)
    torch.testing.assert_close(case.run(roiops, view), case.run(roiops, x), atol=0, rtol=0)
    expanded = x[:1].expand_as(x)
    torch.testing.assert_close(case.run(roiops, expanded), case.run(roiops, expanded.contiguous()),
                               atol=0, rtol=0)


@given(cases(op=st.sampled_from(OPS), dtype=st.just(torch.float32)))
def test_reduced_precision_tracks_float32(case):
    """bf16/fp16 kernels accumulate in float32: their error is only the input and
    output rounding, never an accumulated one."""
    out32 = case.run(roiops)
    for dt, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)):
        x = case.input.to(dt)
        r = case.rois.to(dt)
        exact = case.run(roiops, x.float(), r.float())
        got = case.run(roiops, x, r).float()
        torch.testing.assert_close(got, exact, atol=tol, rtol=tol)
    assert out32.dtype == torch.float32
