"""The CUDA kernels on a real GPU: parity with the CPU kernels (values, argmax,
input and box gradients) for every op, dtype and layout, float64 gradcheck and
gradgradcheck, bitwise-stable backward, no host synchronisation in the fused
multilevel op, maps of more than 2^31 elements, and device-mismatch errors. Skipped
without a GPU (tests/test_cuda_emulated.py runs the same kernels on the CPU)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from roi_cases import OPS, TOLERANCE, cases

import roiops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here"),
]


def run_with_grads(case, device, grad_seed):
    x = case.input.to(device).requires_grad_()
    r = case.rois.to(device).requires_grad_()
    out = case.run(roiops, x, r)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed),
                       dtype=torch.float64).to(out.dtype)
    gx, gr = torch.autograd.grad(out, (x, r), grad.to(device), allow_unused=True)
    return out.cpu(), gx.cpu(), (torch.zeros_like(case.rois) if gr is None else gr.cpu()), out.stride()


@settings(max_examples=200)
@given(cases(specials=False), st.integers(0, 2**31 - 1))
def test_matches_cpu(case, seed):
    out, gx, gr, stride = run_with_grads(case, "cuda", seed)
    eout, egx, egr, estride = run_with_grads(case, "cpu", seed)
    atol, rtol = TOLERANCE[case.input.dtype]
    assert stride == estride
    torch.testing.assert_close(out, eout, atol=atol, rtol=rtol, equal_nan=True)
    torch.testing.assert_close(gx, egx, atol=atol * 8, rtol=rtol, equal_nan=True)
    size = max(1.0, float(egr.double().abs().max()) if egr.numel() else 1.0)
    rtol = max(rtol, torch.finfo(case.rois.dtype).eps)
    torch.testing.assert_close(gr.double(), egr.double(), atol=max(atol, rtol) * size * 4, rtol=rtol * 4)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_gradcheck_and_gradgradcheck(op, mode):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 9, generator=gen, dtype=torch.float64).cuda().requires_grad_()
    rois = torch.tensor([[0, 1.3, 2.2, 7.1, 6.4], [1, 0.4, 0.7, 5.6, 8.2]], dtype=torch.float64).cuda()
    kw = dict(output_size=3, spatial_scale=1.0, mode=mode)
    if op != "roi_pool":
        kw["sampling_ratio"] = 2
    fn = getattr(roiops, op)
    boxes = rois.clone().requires_grad_(op == "roi_align")
    inputs = (x, boxes) if op == "roi_align" else (x,)

    def f(*args):
        return fn(args[0], args[1] if op == "roi_align" else rois, **kw)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(lambda t: fn(t, rois, **kw), (x,))


@pytest.mark.parametrize("op", OPS)
def test_backward_is_bitwise_stable(op):
    torch.use_deterministic_algorithms(True)
    try:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(2, 64, 50, 84, generator=gen).cuda().requires_grad_()
        boxes = torch.rand(512, 4, generator=gen) * 600
        boxes[:, 2:] += boxes[:, :2]
        rois = torch.cat([torch.randint(0, 2, (512, 1), generator=gen).float(), boxes], 1).cuda()
        out = getattr(roiops, op)(x, rois, output_size=7, spatial_scale=1 / 16)
        grad = torch.randn(out.shape, generator=gen).cuda()
        first = torch.autograd.grad(out, x, grad, retain_graph=True)[0]
        for _ in range(100):
            assert torch.equal(torch.autograd.grad(out, x, grad, retain_graph=True)[0], first)
    finally:
        torch.use_deterministic_algorithms(False)


def test_fused_multilevel_never_synchronises():
    gen = torch.Generator().manual_seed(2)
    maps = [torch.randn(2, 16, s, s, generator=gen).cuda().requires_grad_() for s in (64, 32, 16, 8)]
    boxes = torch.rand(256, 4, generator=gen) * 200
    boxes[:, 2:] += boxes[:, :2]
    rois = torch.cat([torch.randint(0, 2, (256, 1), generator=gen).float(), boxes], 1).cuda()
    levels = torch.randint(0, 4, (256,), generator=gen).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, argmax = torch.ops.roiops.roi_align_multilevel(
            maps, rois, levels, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 7, 7, 2, True, "avg", "bilinear", True)
        torch.ops.roiops._roi_align_multilevel_backward(
            torch.ones_like(out), maps, argmax, rois, levels, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 7, 7, 2, True,
            "avg", "bilinear")
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_map_with_more_than_2_31_elements():
    x = torch.zeros(1, 1, 46341, 46341, dtype=torch.float16, device="cuda")
    assert x.numel() > 2**31
    x[0, 0, -8:, -8:] = 1
    rois = torch.tensor([[0, 46333.0, 46333.0, 46341.0, 46341.0]], device="cuda")
    out = roiops.roi_align(x, rois, output_size=2, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    assert torch.allclose(out.float().cpu(), torch.ones(1, 1, 2, 2))


def test_device_mismatch_is_a_clear_error():
    x = torch.randn(1, 1, 4, 4, device="cuda")
    with pytest.raises(ValueError, match="boxes are on"):
        torch.ops.roiops.roi_align(x, torch.tensor([[0.0, 0, 0, 2, 2]]), 1.0, 2, 2, 2, False, "avg",
                                   "bilinear", True)
