"""MultiScaleRoIPooler and the fused *_multilevel ops: each RoI is pooled from its
FPN level exactly as the single-level op would, in one op call, with gradients for
every level and the boxes, second order, compile/export and determinism."""

from collections import OrderedDict

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from roi_cases import DTYPES, TOLERANCE

import roiops
from roiops import reference
from roiops.testing import random_rois

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
KWARGS = {
    "roi_align": [dict(sampling_ratio=sr, aligned=al, mode=m, sampling=s)
                  for sr in (-1, 2) for al in (False, True) for m in ("avg", "max") for s in ("bilinear", "nearest")],
    "roi_warp": [dict(sampling_ratio=sr, mode=m, sampling=s)
                 for sr in (-1, 2) for m in ("avg", "max") for s in ("bilinear", "nearest")],
    "roi_pool": [dict(mode=m) for m in ("avg", "max")],
}


def pyramid(gen, n_levels, dtype, formats, N=2, C=3, H=48, W=64):
    feats = []
    for i in range(n_levels):
        f = torch.randn(N, C, max(H >> i, 1), max(W >> i, 1), generator=gen, dtype=torch.float64).to(dtype)
        feats.append(f.contiguous(memory_format=torch.channels_last) if formats[i] else f)
    return feats


def spread_rois(gen, count, N, image, dtype):
    # Sizes from 4 px to beyond the image so that every level gets RoIs.
    return random_rois(count, N, image, min_size=4, max_fraction=1.5, generator=gen, dtype=dtype)


@given(
    op=st.sampled_from(list(KWARGS)),
    choice=st.integers(0, 15),
    n_levels=st.integers(1, 4),
    dtype=st.sampled_from(DTYPES),
    formats=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=st.integers(0, 2**31 - 1),
)
def test_pooler_matches_reference_values_and_gradients(op, choice, n_levels, dtype, formats, seed):
    kw = KWARGS[op][choice % len(KWARGS[op])]
    gen = torch.Generator().manual_seed(seed)
    feats = pyramid(gen, n_levels, dtype, formats)
    rois = spread_rois(gen, 12, 2, (192, 256), dtype)
    pooler = roiops.MultiScaleRoIPooler((3, 2), SCALES[:n_levels], op, **kw, canonical_size=56)
    levels = pooler.levels(rois)

    fs = [f.clone().requires_grad_() for f in feats]
    r = rois.clone().requires_grad_()
    out = pooler(fs, r)
    assert out.dtype == dtype and out.shape == (12, 3, 3, 2)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, fs + [r], g)

    ref_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    fr = [f.to(ref_dtype).requires_grad_() for f in feats]
    rr = rois.to(ref_dtype).requires_grad_()
    expected = reference.multilevel(op, fr, rr, levels, SCALES[:n_levels], (3, 2), **kw)
    egrads = torch.autograd.grad(expected, fr + [rr], g.to(ref_dtype), allow_unused=True)

    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(out.to(ref_dtype), expected, atol=atol, rtol=rtol)
    for got, want, f in zip(grads[:-1], egrads[:-1], feats, strict=True):
        assert got.shape == f.shape and got.dtype == dtype
        torch.testing.assert_close(got.to(ref_dtype), want, atol=atol, rtol=rtol)
    want = torch.zeros_like(rr) if egrads[-1] is None else egrads[-1]
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(grads[-1].to(ref_dtype), want, atol=4 * atol * scale, rtol=4 * rtol)


def test_matches_torchvision_multiscale_roi_align():
    torchvision = pytest.importorskip("torchvision", reason="needs torchvision: pip install roiops[models]")
    gen = torch.Generator().manual_seed(0)
    feats = pyramid(gen, 4, torch.float64, [False, True, False, True], N=2, C=8, H=64, W=96)
    rois = spread_rois(gen, 60, 2, (256, 384), torch.float64)
    ours = roiops.MultiScaleRoIPooler(7, SCALES, sampling_ratio=2, aligned=False, canonical_size=56)(feats, rois)
    tv = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2, canonical_scale=56)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    theirs = tv(OrderedDict((str(i), f) for i, f in enumerate(feats)), per_image, [(256, 384)] * 2)
    order = torch.cat([(rois[:, 0] == i).nonzero()[:, 0] for i in range(2)])
    assert roiops.fpn_levels(rois, 2, 5, canonical_size=56).bincount().count_nonzero() == 4
    torch.testing.assert_close(ours[order], theirs, atol=1e-12, rtol=1e-12)


# Minutes per op in float64 on 2 shared cores: left out of the fast suite.
@pytest.mark.slow
@pytest.mark.parametrize("op", list(KWARGS))
def test_gradcheck_and_gradgradcheck_every_level(op):
    gen = torch.Generator().manual_seed(1)
    feats = [f.requires_grad_() for f in pyramid(gen, 3, torch.float64, [False, True, False], C=2, H=24, W=32)]
    rois = torch.tensor([[0, 3.3, 4.1, 15.7, 13.2], [1, 10.2, 2.1, 60.3, 44.7], [0, 1.1, 2.3, 120.7, 90.2],
                         [1, 30.4, 40.6, 52.9, 62.1]], dtype=torch.float64)
    kw = {"roi_align": dict(sampling_ratio=2, aligned=True, mode="avg"), "roi_warp": dict(sampling_ratio=2),
          "roi_pool": dict(mode="max")}[op]
    pooler = roiops.MultiScaleRoIPooler(2, SCALES[:3], op, **kw, canonical_size=32)
    assert pooler.levels(rois).unique().numel() == 3
    coords = rois[:, 1:].clone().requires_grad_()
    f = lambda c, *fs: pooler(list(fs), torch.cat([rois[:, :1], c], 1))  # noqa: E731
    assert torch.autograd.gradcheck(f, (coords, *feats))
    assert torch.autograd.gradgradcheck(lambda *fs: f(coords.detach(), *fs), tuple(feats))


@pytest.mark.parametrize("op", list(KWARGS))
def test_opcheck_multilevel_ops(op):
    gen = torch.Generator().manual_seed(2)
    feats = pyramid(gen, 3, torch.float64, [True, False, True], C=3, H=24, W=32)
    rois = spread_rois(gen, 8, 2, (96, 128), torch.float64)
    pooler = roiops.MultiScaleRoIPooler(3, SCALES[:3], op, **KWARGS[op][-1], canonical_size=32)
    params = {"roi_align": (2, True, "max", "bilinear"), "roi_warp": (2, "avg", "bilinear"), "roi_pool": ("max",)}[op]
    index = (rois, pooler.levels(rois), SCALES[:3], 3, 3, *params)
    ops = torch.ops.roiops
    out, argmax = getattr(ops, f"{op}_multilevel")(feats, *index)
    torch.library.opcheck(getattr(ops, f"{op}_multilevel"), ([f.requires_grad_() for f in feats], *index))
    feats = [f.detach() for f in feats]
    grad = torch.randn_like(out)
    torch.library.opcheck(getattr(ops, f"_{op}_multilevel_backward"), (grad, feats, argmax, *index))
    torch.library.opcheck(getattr(ops, f"_{op}_multilevel_jvp"), ([torch.randn_like(f) for f in feats], argmax, *index))
    if op == "roi_align":
        torch.library.opcheck(ops._roi_align_multilevel_backward_rois, (grad, feats, argmax, *index))


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pooler = roiops.MultiScaleRoIPooler(7, SCALES[:3], sampling_ratio=2)

    def forward(self, p2, p3, p4, rois):
        return self.pooler([p2, p3, p4], rois)


def test_compile_and_export():
    gen = torch.Generator().manual_seed(3)
    feats = pyramid(gen, 3, torch.float32, [True, True, True], C=8)
    rois = spread_rois(gen, 16, 2, (192, 256), torch.float32)
    head = Head()
    torch._dynamo.reset()
    compiled = torch.compile(head, fullgraph=True)
    fe = [f.clone().requires_grad_() for f in feats]
    fc = [f.clone().requires_grad_() for f in feats]
    out_e, out_c = head(*fe, rois), compiled(*fc, rois)
    torch.testing.assert_close(out_c, out_e)
    out_e.sum().backward()
    out_c.sum().backward()
    for a, b in zip(fc, fe, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    ep = torch.export.export(head, (*feats, rois))
    assert "roiops.roi_align_multilevel.default" in {str(n.target) for n in ep.graph.nodes}
    torch.testing.assert_close(ep.module()(*feats, rois), out_e)


def test_backward_is_bitwise_deterministic_across_thread_counts():
    gen = torch.Generator().manual_seed(4)
    feats = pyramid(gen, 4, torch.float32, [False, True, False, True], C=40, H=64, W=96)
    rois = spread_rois(gen, 300, 2, (256, 384), torch.float32)
    pooler = roiops.MultiScaleRoIPooler(7, SCALES)
    threads = torch.get_num_threads()
    runs = []
    try:
        for t in (1, 2, 2):
            torch.set_num_threads(t)
            fs = [f.clone().requires_grad_() for f in feats]
            pooler(fs, rois).pow(2).sum().backward()
            runs.append([f.grad for f in fs])
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_levels_are_computed_in_float64_from_the_box_values(dtype):
    """A 300 px float16 box has an area (90000) beyond float16's range: it went to the
    top level as inf. In bfloat16, [0, 0, 222, 904] has area 200688, rounded to 200704
    = 448^2, which crossed the level-5 boundary. The level now depends only on the
    box values (all exact in each dtype here), never on the dtype's arithmetic."""
    rois = torch.tensor([[0, 0.0, 0.0, 300.0, 300.0], [0, 0.0, 0.0, 222.0, 904.0], [0, 8.0, 8.0, 24.0, 40.0],
                         [0, 0.0, 0.0, 448.0, 448.0]], dtype=torch.float64)
    want = roiops.fpn_levels(rois, 2, 5)
    assert want.tolist() == [2, 2, 0, 3]
    assert torch.equal(roiops.fpn_levels(rois.to(dtype), 2, 5), want)
    pooler = roiops.MultiScaleRoIPooler(7, SCALES)
    assert torch.equal(pooler.levels(rois.to(dtype)), want)


def test_multilevel_output_takes_the_finest_levels_memory_format():
    gen = torch.Generator().manual_seed(5)
    rois = spread_rois(gen, 6, 2, (192, 256), torch.float32)
    for formats in ([True, False, False], [False, True, True]):
        feats = pyramid(gen, 3, torch.float32, formats)
        out = roiops.MultiScaleRoIPooler(2, SCALES[:3], canonical_size=32)(feats, rois)
        fmt = torch.channels_last if formats[0] else torch.contiguous_format
        assert out.is_contiguous(memory_format=fmt)
        # The registered op decides by size, not by position in the list.
        coarse_first = torch.ops.roiops.roi_pool_multilevel(feats[::-1], rois, torch.zeros(6, dtype=torch.long),
                                                            SCALES[:3][::-1], 2, 2, "max", False)[0]
        assert coarse_first.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: roiops.MultiScaleRoIPooler(7, []), ValueError, "at least one pyramid level"),
        (lambda: roiops.MultiScaleRoIPooler(7, [1 / 4, 1 / 6]), ValueError, "power of two"),
        (lambda: roiops.MultiScaleRoIPooler(7, [1 / 4, 1 / 16]), ValueError, "consecutive"),
        (lambda: roiops.MultiScaleRoIPooler(7, [1 / 4], op="roi_bilinear"), ValueError, "op must be one of"),
    ],
)
def test_bad_configuration(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_inputs():
    pooler = roiops.MultiScaleRoIPooler(2, SCALES[:2])
    feats = [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8)]
    rois = torch.tensor([[0, 1.0, 1.0, 30.0, 30.0]])
    with pytest.raises(ValueError, match="got 1 feature maps for 2 scales"):
        pooler(feats[:1], rois)
    with pytest.raises(ValueError, match="every level must share N, C"):
        pooler([feats[0], torch.randn(2, 4, 8, 8)], rois)
    ops = torch.ops.roiops
    levels = torch.tensor([2])
    with pytest.raises(ValueError, match=r"levels\[0\] must be in \[0, 2\)"):
        ops.roi_align_multilevel(feats, rois, levels, SCALES[:2], 2, 2, 2, True, "avg", "bilinear")
    with pytest.raises(ValueError, match="got 1 spatial scales for 2 feature maps"):
        ops.roi_pool_multilevel(feats, rois, torch.tensor([0]), SCALES[:1], 2, 2, "max")
    with pytest.raises(TypeError, match="levels must be int64"):
        ops.roi_warp_multilevel(feats, rois, torch.tensor([0.0]), SCALES[:2], 2, 2, 2, "max", "bilinear")
    with pytest.raises(ValueError, match="inputs must hold at least one feature map"):
        ops.roi_pool_multilevel([], rois, torch.tensor([0]), [], 2, 2, "max")
