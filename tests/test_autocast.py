"""Autocast: every roiops op runs in the dtype of the features it is given (the
bfloat16/float16 a convolution produces under autocast, or float32 left as is), with
float32 boxes kept in float32; no copy of the map is cast to another dtype. The rule is
registered on the AutocastCPU and AutocastCUDA keys of every op, so eager mode,
torch.compile and torch.export compute the same thing."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import roiops

torch.manual_seed(0)
ROIS = torch.tensor([[0, 1.37, 2.23, 15.71, 12.13], [1, -3.3, 4.2, 30.1, 18.4], [1, 9.6, 1.1, 21.7, 17.2]])
LOW = [torch.bfloat16, torch.float16]

POOLS = {
    "roi_align": lambda f, r: roiops.roi_align(f, r, 3, 0.5, 2, True),
    "roi_align_max_nearest": lambda f, r: roiops.roi_align(f, r, 3, 0.5, 2, mode="max", sampling="nearest"),
    "roi_warp": lambda f, r: roiops.roi_warp(f, r, 3, 0.5, 2, mode="avg"),
    "roi_pool": lambda f, r: roiops.roi_pool(f, r, (3, 2), 0.5),
    # The maps' 4 channels: one per bin of a 2 x 2 output, two per bin of a 1 x 2 one.
    "ps_roi_align": lambda f, r: roiops.ps_roi_align(f, r, 2, 0.5, 2),
    "ps_roi_pool": lambda f, r: roiops.ps_roi_pool(f, r, (1, 2), 0.5),
    "prroi_pool": lambda f, r: roiops.prroi_pool(f, r, (3, 2), 0.5),
    # The boxes' four values read as (cx, cy, w, h), turned by 30 degrees.
    "roi_align_rotated": lambda f, r: roiops.roi_align_rotated(f, torch.cat([r, r[:, :1] * 0 + 30], 1), 3, 0.5, 2),
    "pooler": lambda f, r: roiops.MultiScaleRoIPooler(3, [0.5, 0.25], "roi_align", 2)([f, f[:, :, ::2, ::2]], r),
    "MultiScaleRoIAlign": lambda f, r: roiops.MultiScaleRoIAlign(["p2", "p3"], 3, 2)(
        {"p2": f, "p3": f[:, :, ::2, ::2]}, [r[:1, 1:], r[1:, 1:]], [(18, 22)]),
}


class Head(torch.nn.Module):
    """A convolution (which autocast runs in the low dtype) feeding a RoI op."""

    def __init__(self, pool):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.pool = pool

    def forward(self, x, rois):
        return self.pool(self.conv(x), rois)


class Casts(TorchDispatchMode):
    """Records every dtype conversion of a tensor with ``shape``."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.seen = tuple(shape), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype) and tuple(args[0].shape) == self.shape:
            self.seen.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("op", ["roiops::" + name for name in torch.ops.roiops])
@pytest.mark.parametrize("key", ["AutocastCPU", "AutocastCUDA"])
def test_every_op_has_an_autocast_rule(op, key):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", list(POOLS))
def test_runs_in_the_features_dtype_without_copying_the_map(name, dtype):
    head = Head(POOLS[name])
    x = torch.randn(2, 3, 18, 22, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        features = head.conv(x)
        assert features.dtype == dtype
        with Casts(features.shape) as casts:
            out = head.pool(features, ROIS)
    assert casts.seen == [], "autocast copied the feature map to another dtype"
    assert out.dtype == dtype
    # Bitwise what the op computes outside autocast from the same features and boxes.
    torch.testing.assert_close(out, head.pool(features.detach(), ROIS), rtol=0, atol=0)
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", list(POOLS))
def test_float32_features_stay_float32(name):
    features = torch.randn(2, 4, 18, 22)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = POOLS[name](features, ROIS)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, POOLS[name](features, ROIS), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["roi_align", "roi_pool", "pooler", "ps_roi_align", "prroi_pool", "roi_align_rotated"])
def test_compile_under_autocast_matches_eager(name):
    torch._dynamo.reset()
    head = Head(POOLS[name])
    x = torch.randn(2, 3, 18, 22)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = head(x, ROIS)
        compiled = torch.compile(head, fullgraph=True)(x, ROIS)
    assert compiled.dtype == eager.dtype == torch.bfloat16
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


class AutocastHead(Head):
    def forward(self, x, rois):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x, rois)


# torch 2.4.1's torch.export fails on any forward that enters torch.autocast, a plain
# Conv2d as well (its verifier finds no meta["val"] on the _enter_autocast node); 2.11 and
# 2.14 export it. Versions between were not tried, so the skip names 2.4 only.
@pytest.mark.skipif(torch.__version__ < (2, 5), reason="torch < 2.5: torch.export cannot export a forward "
                    "that enters torch.autocast (SpecViolationError: _enter_autocast is missing val)")
@pytest.mark.parametrize("name", ["roi_align", "roi_warp", "roi_pool", "pooler", "ps_roi_pool", "prroi_pool",
                                  "roi_align_rotated"])
def test_export_under_autocast_keeps_the_features_dtype(name):
    head = AutocastHead(POOLS[name])
    x = torch.randn(2, 3, 18, 22)
    program = torch.export.export(head, (x, ROIS)).run_decompositions()
    nodes = [n for n in program.graph.nodes if n.op == "call_function" and "roiops" in str(n.target)]
    assert nodes, program.graph
    for node in nodes:
        maps = node.args[0]
        for m in maps if isinstance(maps, (list, tuple)) else [maps]:
            assert m.meta["val"].dtype == torch.bfloat16
        assert node.args[1].meta["val"].dtype == torch.float32  # the boxes
    torch.testing.assert_close(program.module()(x, ROIS), head(x, ROIS), rtol=0, atol=0)
