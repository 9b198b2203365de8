"""The CUDA kernels, run thread by thread over their whole launch grid by the CPU
emulator (the roiops_emulated ops, csrc/emulator), agree with the CPU kernels and the
reference: every op (the position-sensitive ones included), mode, sampling, dtype and
memory format, single-map and fused multilevel, forward and argmax, input gradient, JVP and box gradient. This checks
the CUDA kernels' indexing, bounds, layout and dtype logic without a GPU; nvcc may
contract multiply-adds where the host compiler does not, so values are compared
with the dtype's tolerance rather than bitwise."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from roi_cases import DTYPES, GPU_OPS, OPS, TOLERANCE, cases

from roiops import reference

pytestmark = pytest.mark.cuda_emulated

CPU = torch.ops.roiops
EMULATED = torch.ops.roiops_emulated


def params(case):
    """The schema's arguments after (input, rois, scale), from a case's kwargs."""
    kw = case.kwargs
    size = kw["output_size"]
    ph, pw = (size, size) if isinstance(size, int) else size
    if case.op == "roi_pool":
        return [ph, pw, kw["mode"]]
    if case.op == "ps_roi_pool":
        return [ph, pw]
    if case.op == "ps_roi_align":
        return [ph, pw, kw["sampling_ratio"]]
    extra = [kw["aligned"]] if case.op == "roi_align" else []
    return [ph, pw, kw["sampling_ratio"], *extra, kw["mode"], kw["sampling"]]


def assert_close(actual, expected, dtype, what, case, scale=1.0):
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol * scale, rtol=rtol,
                               equal_nan=True, msg=lambda m: f"{what} of {case}:\n{m}")


def random_like(t, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)


@given(cases(op=st.sampled_from(GPU_OPS)))
def test_forward_and_argmax(case):
    scale = case.kwargs["spatial_scale"]
    out, arg = getattr(EMULATED, case.op)(case.input, case.rois, scale, *params(case), True)
    cpu_out, cpu_arg = getattr(CPU, case.op)(case.input, case.rois, scale, *params(case), True)
    assert out.dtype == cpu_out.dtype and out.shape == cpu_out.shape
    assert out.stride() == cpu_out.stride(), "output layout differs from the CPU kernels'"
    assert_close(out, cpu_out, case.input.dtype, "output", case)
    assert_close(out, case.run(reference), case.input.dtype, "output vs reference", case)
    if case.kwargs.get("mode") == "max" and torch.isfinite(case.input).all() and case.input.dtype == torch.float64:
        # float64 sample values are far from ties that rounding could flip
        assert torch.equal(arg, cpu_arg), f"argmax of {case}"


@given(cases(op=st.sampled_from(GPU_OPS)), st.integers(0, 2**31 - 1))
def test_input_gradient_and_jvp(case, seed):
    scale, p = case.kwargs["spatial_scale"], params(case)
    out, arg = getattr(CPU, case.op)(case.input, case.rois, scale, *p, True)
    grad = random_like(out, seed)
    gx = getattr(EMULATED, f"_{case.op}_backward")(grad, case.input, arg, case.rois, scale, *p)
    expected = getattr(CPU, f"_{case.op}_backward")(grad, case.input, arg, case.rois, scale, *p)
    assert gx.dtype == expected.dtype and gx.stride() == expected.stride()
    # A pixel sums the gradients of every sample that reads it, in another order.
    assert_close(gx, expected, case.input.dtype, "input gradient", case, scale=8)
    tangent = random_like(case.input, seed + 1)
    jvp = getattr(EMULATED, f"_{case.op}_jvp")(tangent, arg, case.rois, scale, *p)
    expected = getattr(CPU, f"_{case.op}_jvp")(tangent, arg, case.rois, scale, *p)
    assert_close(jvp, expected, case.input.dtype, "jvp", case)


@given(cases(op=st.sampled_from(["roi_align", "ps_roi_align"]), specials=False), st.integers(0, 2**31 - 1))
def test_box_gradient(case, seed):
    scale, p = case.kwargs["spatial_scale"], params(case)
    out, arg = getattr(CPU, case.op)(case.input, case.rois, scale, *p, True)
    grad = random_like(out, seed)
    gr = getattr(EMULATED, f"_{case.op}_backward_rois")(grad, case.input, arg, case.rois, scale, *p)
    expected = getattr(CPU, f"_{case.op}_backward_rois")(grad, case.input, arg, case.rois, scale, *p)
    assert gr.dtype == case.rois.dtype and gr.shape == case.rois.shape
    atol, rtol = TOLERANCE[case.input.dtype]
    rtol = max(rtol, torch.finfo(case.rois.dtype).eps)
    size = max(1.0, float(expected.double().abs().max()) if expected.numel() else 1.0)
    torch.testing.assert_close(gr.double(), expected.double(), atol=max(atol, rtol) * size * 4,
                               rtol=rtol * 4, msg=lambda m: f"box gradient of {case}:\n{m}")


@st.composite
def pyramids(draw):
    """A multilevel problem: 1-4 levels of one case's N, C and dtype, each level's
    size and layout drawn on its own, RoIs spread over the levels."""
    case = draw(cases())
    N, C = case.input.shape[:2]
    L = draw(st.integers(1, 4))
    maps, scales = [], []
    for i in range(L):
        H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        x = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        x = x.to(case.input.dtype)
        if draw(st.booleans()):
            x = x.contiguous(memory_format=torch.channels_last)
        maps.append(x)
        scales.append(draw(st.sampled_from([1.0, 0.5, 0.25])))
    K = case.rois.shape[0]
    levels = torch.tensor([draw(st.integers(0, L - 1)) for _ in range(K)], dtype=torch.int64)
    return case, maps, scales, levels


@given(pyramids(), st.integers(0, 2**31 - 1))
def test_multilevel(problem, seed):
    case, maps, scales, levels = problem
    p, name, dtype = params(case), f"{case.op}_multilevel", case.input.dtype
    out, arg = getattr(EMULATED, name)(maps, case.rois, levels, scales, *p, True)
    cpu_out, cpu_arg = getattr(CPU, name)(maps, case.rois, levels, scales, *p, True)
    assert out.stride() == cpu_out.stride()
    assert_close(out, cpu_out, dtype, "multilevel output", case)
    grad = random_like(cpu_out, seed)
    gxs = getattr(EMULATED, f"_{name}_backward")(grad, maps, cpu_arg, case.rois, levels, scales, *p)
    expected = getattr(CPU, f"_{name}_backward")(grad, maps, cpu_arg, case.rois, levels, scales, *p)
    for level, (gx, ex) in enumerate(zip(gxs, expected, strict=True)):
        assert gx.stride() == ex.stride()
        assert_close(gx, ex, dtype, f"multilevel input gradient of level {level}", case, scale=8)
    tangents = [random_like(m, seed + i) for i, m in enumerate(maps)]
    jvp = getattr(EMULATED, f"_{name}_jvp")(tangents, cpu_arg, case.rois, levels, scales, *p)
    expected = getattr(CPU, f"_{name}_jvp")(tangents, cpu_arg, case.rois, levels, scales, *p)
    assert_close(jvp, expected, dtype, "multilevel jvp", case)
    if case.op == "roi_align" and all(torch.isfinite(m).all() for m in maps):
        gr = EMULATED._roi_align_multilevel_backward_rois(grad, maps, cpu_arg, case.rois, levels, scales, *p)
        er = CPU._roi_align_multilevel_backward_rois(grad, maps, cpu_arg, case.rois, levels, scales, *p)
        size = max(1.0, float(er.double().abs().max()) if er.numel() else 1.0)
        rtol = max(TOLERANCE[dtype][1], torch.finfo(case.rois.dtype).eps)
        torch.testing.assert_close(gr.double(), er.double(), atol=max(TOLERANCE[dtype][0], rtol) * size * 4,
                                   rtol=rtol * 4)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_fused_levels_equal_single_level_calls(op, mode):
    """Each RoI of a fused four-level call gets what the single-map op gives it on its
    level (NVIDIA's fused FPN kernel once zeroed every level through a missing break)."""
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 3, s, s + 1, generator=gen) for s in (16, 8, 4, 2)]
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    rois = torch.tensor([[i % 2, 4.0 * i, 2.0 * i, 20.0 + 9 * i, 30.0 + 5 * i] for i in range(8)])
    levels = torch.arange(8) % 4
    p = [3, 3, mode] if op == "roi_pool" else [3, 3, 2, *([False] if op == "roi_align" else []), mode, "bilinear"]
    fused, _ = getattr(EMULATED, f"{op}_multilevel")(maps, rois, levels, scales, *p, True)
    for k in range(8):
        level = int(levels[k])
        single, _ = getattr(EMULATED, op)(maps[level], rois[k:k + 1], scales[level], *p, True)
        torch.testing.assert_close(fused[k:k + 1], single, rtol=0, atol=0)
    assert fused.abs().sum() > 0


@pytest.mark.parametrize("op", GPU_OPS)
def test_backward_is_deterministic_across_thread_counts(op):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 32 if op.startswith("ps_") else 5, 12, 12, generator=gen)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0]] * 6 + [[1, 0.5, 2.0, 11.0, 7.0]] * 6)
    rois[:, 1:] += torch.rand(12, 4, generator=gen)
    p = {"roi_pool": [4, 4, "avg"], "ps_roi_pool": [4, 4], "ps_roi_align": [4, 4, 2]}.get(
        op, [4, 4, 2, *([True] if op == "roi_align" else []), "avg", "bilinear"])
    out, arg = getattr(CPU, op)(x, rois, 1.0, *p, True)
    grad = torch.randn(out.shape, generator=gen)
    results = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        results.append(getattr(EMULATED, f"_{op}_backward")(grad, x, arg, rois, 1.0, *p))
    torch.set_num_threads(2)
    assert all(torch.equal(r, results[0]) for r in results)


def test_64_bit_indexing():
    """A map with more than 2^31 elements (an expanded batch, so no memory is used)
    takes the 64-bit index path: the RoI on the last image reads the right pixels."""
    base = torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(2))
    N = 2**31 // base[0].numel() + 2
    x = base.expand(N, -1, -1, -1)
    assert x.numel() > 2**31
    rois = torch.tensor([[N - 1, 3.5, 2.0, 40.0, 51.0], [0, 0.0, 0.0, 63.0, 63.0]])
    for op, p in [("roi_align", [7, 7, 2, True, "avg", "bilinear"]), ("roi_pool", [5, 5, "max"])]:
        out, _ = getattr(EMULATED, op)(x, rois, 1.0, *p, True)
        expected, _ = getattr(CPU, op)(base, torch.cat([rois[:, :1] * 0, rois[:, 1:]], 1), 1.0, *p, True)
        torch.testing.assert_close(out, expected)


def test_bad_batch_index_and_level_are_refused_before_the_kernels():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="batch index"):
        EMULATED.roi_align(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 1.0, 2, 2, 2, False, "avg", "bilinear", True)
    with pytest.raises(ValueError, match="levels"):
        EMULATED.roi_pool_multilevel([x], torch.tensor([[0.0, 0, 0, 2, 2]]), torch.tensor([1]), [1.0], 2, 2,
                                     "max", True)


def test_at_most_eight_levels():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="at most 8"):
        EMULATED.roi_align_multilevel([x] * 9, torch.tensor([[0.0, 0, 0, 2, 2]]), torch.tensor([0]),
                                      [1.0] * 9, 2, 2, 2, False, "avg", "bilinear", True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduced_precision_accumulates_in_float32(dtype):
    """A bin of 64 samples of 1 + 2^-10: accumulating in float16 would round every
    partial sum; float32 accumulation gives the mean exactly before the final cast."""
    x = torch.full((1, 1, 8, 8), 1 + 2**-10, dtype=dtype)
    rois = torch.tensor([[0.0, 0.0, 0.0, 8.0, 8.0]])
    out, _ = EMULATED.roi_align(x, rois, 1.0, 1, 1, 8, False, "avg", "bilinear", True)
    assert out.item() == x[0, 0, 0, 0].item()


@given(cases(op=st.sampled_from(GPU_OPS), specials=False, channels_last=True), st.sampled_from([8, 16, 24]),
       st.integers(0, 2**31 - 1))
def test_packed_channels_last(case, C, seed):
    """channels_last maps whose C is a multiple of 16 bytes take the kernels that move
    a pixel's channels as packed 16-byte loads and stores (V channels per thread); the
    position-sensitive ops' 8-24 output channels per bin take V channels per thread too,
    each its own load (they lie PH x PW channels apart)."""
    gen = torch.Generator().manual_seed(seed)
    N, _, H, W = case.input.shape
    C *= case.input.shape[1] // case.output_channels  # PH x PW input channels per output channel (PS ops)
    x = torch.randn(N, C, H, W, generator=gen, dtype=torch.float64).to(case.input.dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    scale, p = case.kwargs["spatial_scale"], params(case)
    out, arg = getattr(EMULATED, case.op)(x, case.rois, scale, *p, True)
    cpu_out, cpu_arg = getattr(CPU, case.op)(x, case.rois, scale, *p, True)
    assert out.stride() == cpu_out.stride()
    assert_close(out, cpu_out, x.dtype, "output", case)
    grad = random_like(cpu_out, seed)
    gx = getattr(EMULATED, f"_{case.op}_backward")(grad, x, cpu_arg, case.rois, scale, *p)
    expected = getattr(CPU, f"_{case.op}_backward")(grad, x, cpu_arg, case.rois, scale, *p)
    assert gx.stride() == expected.stride()
    assert_close(gx, expected, x.dtype, "input gradient", case, scale=8)
