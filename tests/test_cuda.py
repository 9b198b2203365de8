"""The CUDA kernels on a real GPU: parity with the CPU kernels (values, argmax, input and
box gradients, JVP) for every op, mode, dtype and layout, on random small problems, at
detection sizes (C = 256: 16 channels per thread in both layouts; 1024 RoIs; FPN levels
P2-P5) and on the one-pack and one-channel paths (C = 24 and 5); float64 gradcheck and
gradgradcheck; bitwise-stable backward; the current (non-default) stream; CUDA-graph
capture and replay of forward and backward; a second GPU; no host synchronisation
anywhere in the public Python API; maps of more than 2^31 elements; device-mismatch
errors. Skipped without a GPU (tests/test_cuda_emulated.py runs the same kernels on the
CPU).

benchmarks/gpu_checks.sh runs the detection-size parity (-k detection) as its own step."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from roi_cases import DTYPES, GPU_OPS, OPS, PS_OPS, TOLERANCE, cases

import roiops
from roiops.testing import random_rois

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here"),
]

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
NAMES = ["p2", "p3", "p4", "p5"]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.fixture(scope="module", autouse=True)
def every_cpu_thread():
    """The CPU kernels are the reference at detection sizes; conftest's two threads would
    make them most of this file's time on a many-core GPU machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


def seeded_randn(shape, seed, dtype=torch.float32):
    """The same values on every device: drawn on the CPU in float64, then cast."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def run_with_grads(case, device, grad_seed):
    x = case.input.to(device).requires_grad_()
    r = case.rois.to(device).requires_grad_()
    out = case.run(roiops, x, r)
    grad = seeded_randn(out.shape, grad_seed, out.dtype)
    gx, gr = torch.autograd.grad(out, (x, r), grad.to(device), allow_unused=True)
    return out.cpu(), gx.cpu(), (torch.zeros_like(case.rois) if gr is None else gr.cpu()), out.stride()


def assert_box_grads_close(actual, expected, dtype, box_dtype, what=""):
    """Box gradients sum over channels, bins and samples in another order on each device:
    compared relative to their largest magnitude."""
    atol, rtol = TOLERANCE[dtype]
    rtol = max(rtol, torch.finfo(box_dtype).eps)
    size = max(1.0, float(expected.double().abs().max()) if expected.numel() else 1.0)
    torch.testing.assert_close(actual.double().cpu(), expected.double(), atol=max(atol, rtol) * size * 4,
                               rtol=rtol * 4, msg=lambda m: f"box gradient {what}:\n{m}")


@settings(max_examples=200)
@given(cases(op=st.sampled_from(GPU_OPS), specials=False), st.integers(0, 2**31 - 1))
def test_matches_cpu(case, seed):
    out, gx, gr, stride = run_with_grads(case, "cuda", seed)
    eout, egx, egr, estride = run_with_grads(case, "cpu", seed)
    atol, rtol = TOLERANCE[case.input.dtype]
    assert stride == estride
    torch.testing.assert_close(out, eout, atol=atol, rtol=rtol, equal_nan=True)
    torch.testing.assert_close(gx, egx, atol=atol * 8, rtol=rtol, equal_nan=True)
    assert_box_grads_close(gr, egr, case.input.dtype, case.rois.dtype)


# ---- detection sizes -------------------------------------------------------------------


def detection_pyramid(dtype, layout, seed=0):
    """FPN levels P2-P5 of two 512x512 images with 256 channels, and 1024 RoIs (sides 8 to
    480 pixels, so every level gets some), on the CPU."""
    maps = [seeded_randn((2, 256, int(512 * s), int(512 * s)), seed + i, dtype).contiguous(
        memory_format=LAYOUTS[layout]) for i, s in enumerate(SCALES)]
    rois = random_rois(1024, 2, (512.0, 512.0), min_size=8, max_fraction=0.94,
                       generator=torch.Generator().manual_seed(seed + 10))
    return maps, rois


def op_params(op, mode):
    """The schema's arguments after (maps, rois, levels, scales): 7x7 bins, sampling ratio
    2, aligned, bilinear."""
    if op == "roi_pool":
        return [7, 7, mode]
    return [7, 7, 2, *([True] if op == "roi_align" else []), mode, "bilinear"]


def relative_error(actual, expected, atol, rtol):
    """max |actual - expected| / (atol + rtol |expected|): at most 1 passes assert_close."""
    a, e = actual.double().cpu(), expected.double()
    return float(((a - e).abs() / (atol + rtol * e.abs())).max()) if e.numel() else 0.0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("op", OPS)
def test_detection_sizes_match_cpu(op, mode, dtype, layout):
    """The fused multilevel kernels at detection sizes (16 channels per thread) against
    the CPU kernels."""
    maps, rois = detection_pyramid(dtype, layout)
    assert set(roiops.MultiScaleRoIPooler(7, SCALES).levels(rois).tolist()) == {0, 1, 2, 3}
    check_multilevel_parity(op, mode, dtype, layout, maps, rois)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("op", PS_OPS)
def test_position_sensitive_detection_sizes_match_cpu(op, dtype, layout):
    """R-FCN's head at detection size: a 1/16 map of two 800 x 1024 images with 7 x 7 x 16
    channels (16 per bin: 16 channels per thread, each its own load), 600 RoIs."""
    x = seeded_randn((2, 7 * 7 * 16, 50, 64), 0, dtype).contiguous(memory_format=LAYOUTS[layout])
    rois = random_rois(600, 2, (800.0, 1024.0), min_size=8, generator=torch.Generator().manual_seed(3))
    kw = dict(output_size=7, spatial_scale=1 / 16, **({"sampling_ratio": 2} if op == "ps_roi_align" else {}))
    fn = getattr(roiops, op)
    xs = [x.clone().requires_grad_(), x.cuda().requires_grad_()]
    rs = [rois.clone().requires_grad_(), rois.cuda().requires_grad_()]
    outs = [fn(xi, ri, **kw) for xi, ri in zip(xs, rs, strict=True)]
    grad = seeded_randn(outs[0].shape, 1, dtype)
    grads = [torch.autograd.grad(o, (xi, ri), grad.to(o.device), allow_unused=True)
             for o, xi, ri in zip(outs, xs, rs, strict=True)]
    atol, rtol = TOLERANCE[dtype]
    assert outs[1].stride() == outs[0].stride() and grads[1][0].stride() == grads[0][0].stride()
    torch.testing.assert_close(outs[1].cpu(), outs[0].detach(), atol=atol, rtol=rtol)
    torch.testing.assert_close(grads[1][0].cpu(), grads[0][0], atol=atol * 8, rtol=rtol)
    if op == "ps_roi_align":
        assert_box_grads_close(grads[1][1], grads[0][1], dtype, rois.dtype, f"of {op} {dtype} {layout}")


@pytest.mark.parametrize("channels", [24, 5], ids=["pack", "one-channel"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("op", OPS)
def test_pack_and_single_channel_paths_match_cpu(op, mode, dtype, layout, channels):
    """C = 24 is no multiple of the 16-channel group: channels_last threads take one
    16-byte pack (24 is a multiple of 8, 4 and 2 channels), NCHW threads one channel;
    C = 5 takes one channel per thread in both layouts."""
    maps, rois, _ = small_problem("cpu", dtype, layout, channels)
    check_multilevel_parity(op, mode, dtype, layout, [m.detach() for m in maps], rois.detach())


def check_multilevel_parity(op, mode, dtype, layout, maps, rois):
    """Forward, argmax (float64), input gradient, JVP and box gradient of the fused
    multilevel kernels against the CPU's. The GPU's backward is given the CPU's argmax,
    so that a tie between equal samples (common in float16/bfloat16) that the two
    devices break alike or not cannot make the gradients differ."""
    ops = torch.ops.roiops
    levels = roiops.MultiScaleRoIPooler(7, SCALES).levels(rois)
    p = op_params(op, mode)
    cuda = [m.cuda() for m in maps], rois.cuda(), levels.cuda()
    out, arg = getattr(ops, f"{op}_multilevel")(*cuda, SCALES, *p, True)
    cpu_out, cpu_arg = getattr(ops, f"{op}_multilevel")(maps, rois, levels, SCALES, *p, True)
    atol, rtol = TOLERANCE[dtype]
    assert out.stride() == cpu_out.stride()
    errors = {"forward": relative_error(out, cpu_out, atol, rtol)}
    if mode == "max" and dtype == torch.float64:
        assert torch.equal(arg.cpu(), cpu_arg), "argmax differs from the CPU's"
    grad = torch.empty_like(cpu_out).copy_(seeded_randn(cpu_out.shape, 1, dtype))  # the output's layout
    gxs = getattr(ops, f"_{op}_multilevel_backward")(grad.cuda(), cuda[0], cpu_arg.cuda(), *cuda[1:], SCALES, *p)
    expected = getattr(ops, f"_{op}_multilevel_backward")(grad, maps, cpu_arg, rois, levels, SCALES, *p)
    for level, (gx, ex) in enumerate(zip(gxs, expected, strict=True)):
        assert gx.stride() == ex.stride()
        errors[f"input grad P{level + 2}"] = relative_error(gx, ex, atol * 8, rtol)
    tangents = [seeded_randn(m.shape, 2 + i, dtype).contiguous(memory_format=LAYOUTS[layout])
                for i, m in enumerate(maps)]
    jvp = getattr(ops, f"_{op}_multilevel_jvp")([t.cuda() for t in tangents], cpu_arg.cuda(), *cuda[1:], SCALES, *p)
    errors["jvp"] = relative_error(jvp, getattr(ops, f"_{op}_multilevel_jvp")(tangents, cpu_arg, rois, levels,
                                                                               SCALES, *p), atol, rtol)
    if op == "roi_align":
        gr = ops._roi_align_multilevel_backward_rois(grad.cuda(), cuda[0], cpu_arg.cuda(), *cuda[1:], SCALES, *p)
        er = ops._roi_align_multilevel_backward_rois(grad, maps, cpu_arg, rois, levels, SCALES, *p)
        assert_box_grads_close(gr, er, dtype, rois.dtype, f"of {op} {mode} {dtype} {layout}")
    # Printed for gpu_checks.sh's parity log: how close each result came to its tolerance.
    print(f"\n{op} {mode} {str(dtype)[6:]} {layout}: error / tolerance "
          + ", ".join(f"{k} {v:.3f}" for k, v in errors.items()), end=" ")
    assert all(v <= 1 for v in errors.values()), errors


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", OPS)
def test_detection_sizes_single_map_public_api(op, layout):
    """The single-map ops through the public functions and autograd at a detection size
    (P3 of two 800x1344 images, 256 channels, 1024 RoIs, adaptive sampling), float32."""
    x = seeded_randn((2, 256, 100, 168), 5).contiguous(memory_format=LAYOUTS[layout])
    rois = random_rois(1024, 2, (800.0, 1344.0), min_size=16, generator=torch.Generator().manual_seed(6))
    kw = dict(output_size=7, spatial_scale=1 / 8)
    if op != "roi_pool":
        kw["sampling_ratio"] = 0
    results = []
    for device in ("cpu", "cuda"):
        xd, rd = x.to(device).requires_grad_(), rois.to(device).requires_grad_()
        out = getattr(roiops, op)(xd, rd, **kw)
        grad = torch.empty_like(out).copy_(seeded_randn(out.shape, 7))  # the output's layout, as autograd's
        grads = torch.autograd.grad(out, (xd, rd), grad, allow_unused=True)
        results.append((out, *grads))
    (out, gx, gr), (eout, egx, egr) = results[1], results[0]
    atol, rtol = TOLERANCE[torch.float32]
    assert out.stride() == eout.stride()
    torch.testing.assert_close(out.cpu(), eout, atol=atol, rtol=rtol)
    torch.testing.assert_close(gx.cpu(), egx, atol=atol * 8, rtol=rtol)
    if op == "roi_align":
        assert_box_grads_close(gr, egr, torch.float32, torch.float32)


# ---- streams, graphs, devices and host synchronisation ----------------------------------


def small_problem(device, dtype=torch.float32, layout="nchw", channels=16):
    """P2-P5 of two 256x256 images and 300 RoIs, as maps, [K, 5] rois and per-image box
    lists, every tensor a leaf that requires grad."""
    maps = [seeded_randn((2, channels, int(256 * s), int(256 * s)), 20 + i, dtype).contiguous(
        memory_format=LAYOUTS[layout]).to(device).requires_grad_() for i, s in enumerate(SCALES)]
    rois = random_rois(300, 2, (256.0, 256.0), min_size=8, generator=torch.Generator().manual_seed(30))
    rois = rois[torch.argsort(rois[:, 0], stable=True)]
    boxes = [rois[rois[:, 0] == i, 1:].to(device).requires_grad_() for i in range(2)]
    return maps, rois.to(device).requires_grad_(), boxes


# Every public entry point: functions, modules and both poolers, each as
# fn(maps, rois, boxes) -> output. The single-map ones pool from P3.
PUBLIC = {
    "roi_align": lambda m, r, b: roiops.roi_align(m[1], r, 7, 1 / 8, 2, True),
    "roi_align max, box lists": lambda m, r, b: roiops.roi_align(m[1], b, (7, 5), 1 / 8, 0, False, mode="max"),
    "roi_warp": lambda m, r, b: roiops.roi_warp(m[1], r, 7, 1 / 8, 2),
    "roi_pool": lambda m, r, b: roiops.roi_pool(m[1], r, 7, 1 / 8),
    "roi_pool avg": lambda m, r, b: roiops.roi_pool(m[1], r, 7, 1 / 8, mode="avg"),
    "RoIAlign": lambda m, r, b: roiops.RoIAlign(7, 1 / 8, 2, aligned=True)(m[1], r),
    "RoIWarp": lambda m, r, b: roiops.RoIWarp(7, 1 / 8, 2, mode="max")(m[1], r),
    "RoIPool": lambda m, r, b: roiops.RoIPool(7, 1 / 8)(m[1], r),
    "MultiScaleRoIPooler": lambda m, r, b: roiops.MultiScaleRoIPooler(7, SCALES)(m, r),
    "MultiScaleRoIPooler roi_pool": lambda m, r, b: roiops.MultiScaleRoIPooler(7, SCALES, "roi_pool")(m, b),
    "MultiScaleRoIPooler roi_warp max": lambda m, r, b: roiops.MultiScaleRoIPooler(
        (7, 5), SCALES, "roi_warp", mode="max")(m, r),
    "MultiScaleRoIAlign": lambda m, r, b: roiops.MultiScaleRoIAlign(NAMES, 7, 2)(
        dict(zip(NAMES, m, strict=True)), b, [(256, 256)] * 2),
}


def forward_backward(fn, maps, rois, boxes, grad=None):
    """fn's output and its gradients with respect to every map, the rois and the box
    lists (None for those it does not use)."""
    out = fn(maps, rois, boxes)
    grad = torch.ones_like(out) if grad is None else grad
    return out, torch.autograd.grad(out, [*maps, rois, *boxes], grad, allow_unused=True)


def assert_same_results(actual, expected):
    (out, grads), (eout, egrads) = actual, expected
    torch.testing.assert_close(out, eout)
    for g, e in zip(grads, egrads, strict=True):
        assert (g is None) == (e is None)
        if g is not None:
            torch.testing.assert_close(g, e)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_api_never_synchronises(name):
    """Forward and backward of every public entry point under
    torch.cuda.set_sync_debug_mode("error"), which raises at any host synchronisation
    (a device-to-host copy, .item(), nonzero, a stream or device synchronize)."""
    maps, rois, boxes = small_problem("cuda", torch.float16, "channels_last")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        forward_backward(PUBLIC[name], maps, rois, boxes)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["roi_align", "roi_pool", "MultiScaleRoIPooler", "MultiScaleRoIPooler roi_pool"])
def test_runs_on_the_current_stream(name, layout):
    """On a side stream held busy, the inputs are written just before the op: a kernel
    launched on another stream would read them unwritten (NaN) and differ."""
    fn = PUBLIC[name]
    maps, rois, boxes = small_problem("cuda", layout=layout)
    expected = forward_backward(fn, maps, rois, boxes)
    blank = [torch.full_like(m, float("nan")).detach() for m in maps]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # about 50 ms of the side stream
        for b, m in zip(blank, maps, strict=True):
            b.copy_(m.detach())
        on_side = [b.requires_grad_() for b in blank]
        actual = forward_backward(fn, on_side, rois, boxes)
    torch.cuda.current_stream().wait_stream(side)
    assert_same_results(actual, expected)


@pytest.mark.parametrize("name", ["roi_align", "roi_pool", "MultiScaleRoIPooler roi_warp max", "MultiScaleRoIAlign"])
def test_cuda_graph_capture_of_forward_and_backward(name):
    """Forward and backward captured in a CUDA graph (torch.cuda.graph), replayed on new
    values written into the captured inputs, give what eager calls give."""
    fn = PUBLIC[name]
    maps, rois, boxes = small_problem("cuda", torch.bfloat16, "channels_last")
    out = fn(maps, rois, boxes)
    grad = torch.empty_like(out).copy_(seeded_randn(out.shape, 40, out.dtype))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(2):
            forward_backward(fn, maps, rois, boxes, grad)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = forward_backward(fn, maps, rois, boxes, grad)
    with torch.no_grad():
        for i, m in enumerate(maps):
            m.copy_(seeded_randn(m.shape, 50 + i, m.dtype).cuda())
        for t in (rois[:, 1:], *boxes):
            t += 3.5
    graph.replay()
    assert_same_results(captured, forward_backward(fn, maps, rois, boxes, grad))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="one GPU here")
@pytest.mark.parametrize("name", ["roi_align", "roi_pool", "MultiScaleRoIPooler", "MultiScaleRoIAlign"])
def test_second_gpu(name):
    """Tensors on cuda:1 while cuda:0 is current: outputs and gradients on cuda:1, equal to
    the CPU's, and the current device unchanged."""
    fn = PUBLIC[name]
    torch.cuda.set_device(0)
    out, grads = forward_backward(fn, *small_problem("cuda:1"))
    assert out.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
    torch.cuda.synchronize(1)
    eout, egrads = forward_backward(fn, *small_problem("cpu"))
    torch.testing.assert_close(out.cpu(), eout, atol=2e-5, rtol=2e-5)
    for g, e in zip(grads, egrads, strict=True):
        assert (g is None) == (e is None)
        if g is not None:
            assert g.device == torch.device("cuda:1")
            torch.testing.assert_close(g.cpu(), e, atol=2e-4, rtol=2e-4)


# ---- gradcheck, stability, large maps, errors --------------------------------------------


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
