"""The ops are real dispatcher ops: opcheck passes on every registered op (schema,
fake kernel, autograd registration), torch.compile(fullgraph=True) matches eager
forward and backward, and torch.export captures a module using each op."""

import itertools

import pytest
import torch

import roiops

torch.manual_seed(0)
ROIS = torch.tensor([[0, 1.37, 2.23, 15.71, 12.13], [1, -3.3, 4.2, 30.1, 18.4],
                     [1, 9.6, 1.1, 21.7, 17.2]])
# roi_align_rotated's boxes (batch, cx, cy, w, h, angle).
ROTATED = torch.tensor([[0, 8.5, 7.2, 14.3, 9.9, 23.0], [1, 13.4, 11.3, 33.4, 14.2, -117.0],
                        [1, 15.7, 9.2, 12.1, 16.1, 400.0]])
PARAMS = {
    "roi_align": [(0.5, 3, 2, sr, al, m, s) for sr, al, m, s in
                  itertools.product([2, -1], [True, False], ["avg", "max"], ["bilinear", "nearest"])],
    "roi_warp": [(0.5, 3, 2, 2, m, s) for m, s in itertools.product(["avg", "max"], ["bilinear", "nearest"])],
    "roi_pool": [(0.5, 3, 2, m) for m in ["avg", "max"]],
    "ps_roi_align": [(0.5, 3, 2, sr) for sr in [2, -1]],
    "ps_roi_pool": [(0.5, 3, 2)],
    "prroi_pool": [(0.5, 3, 2)],
    "roi_align_rotated": [(0.5, 3, 2, sr, al, cw) for sr, (al, cw) in
                          itertools.product([2, -1], [(True, False), (False, True)])],
}


def inputs(dtype=torch.float64, channels_last=False, channels=3, rotated=False):
    x = torch.randn(2, channels, 9, 11, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, (ROTATED if rotated else ROIS).to(dtype)


def opcheck_cases():
    for name, plist in PARAMS.items():
        for p, cl in itertools.product(plist, [False, True]):
            yield pytest.param(name, p, cl, id=f"{name}-{'-'.join(map(str, p))}-{'cl' if cl else 'nchw'}")


@pytest.mark.parametrize("name,params,channels_last", list(opcheck_cases()))
def test_opcheck_every_op(name, params, channels_last):
    ops = torch.ops.roiops
    # The position-sensitive ops read 2 channels for each of the 3 x 2 bins.
    x, rois = inputs(channels_last=channels_last, channels=12 if name.startswith("ps_") else 3,
                     rotated=name == "roi_align_rotated")
    out, argmax = getattr(ops, name)(x, rois, *params)
    grad = torch.randn_like(out)
    torch.library.opcheck(getattr(ops, name), (x.requires_grad_(), rois, *params))
    x = x.detach()
    torch.library.opcheck(getattr(ops, f"_{name}_backward"), (grad, x, argmax, rois, *params))
    torch.library.opcheck(getattr(ops, f"_{name}_jvp"), (torch.randn_like(x), argmax, rois, *params))
    if hasattr(ops, f"_{name}_backward_rois"):  # roi_align, ps_roi_align, prroi_pool, roi_align_rotated
        torch.library.opcheck(getattr(ops, f"_{name}_backward_rois"), (grad, x, argmax, rois, *params))


FUNCS = [
    ("roi_align", lambda x, r: roiops.roi_align(x, r, 3, 0.5, 2, True)),
    ("roi_align_max", lambda x, r: roiops.roi_align(x, r, 3, 0.5, 2, True, mode="max")),
    ("roi_warp", lambda x, r: roiops.roi_warp(x, r, 3, 0.5, 2)),
    ("roi_pool", lambda x, r: roiops.roi_pool(x, r, (3, 2), 0.5, mode="avg")),
    # The maps' 3 channels are one per bin of a 1 x 3 or 3 x 1 output.
    ("ps_roi_align", lambda x, r: roiops.ps_roi_align(x, r, (1, 3), 0.5, 2)),
    ("ps_roi_pool", lambda x, r: roiops.ps_roi_pool(x, r, (3, 1), 0.5)),
    ("prroi_pool", lambda x, r: roiops.prroi_pool(x, r, (3, 2), 0.5)),
    ("roi_align_rotated", lambda x, r: roiops.roi_align_rotated(x, r, (3, 2), 0.5, 2)),
]


@pytest.mark.parametrize("name,fn", FUNCS, ids=[f[0] for f in FUNCS])
def test_compile_fullgraph_matches_eager(name, fn):
    torch._dynamo.reset()
    x, rois = inputs(torch.float32, channels_last=True, rotated=name == "roi_align_rotated")
    compiled = torch.compile(fn, fullgraph=True, backend="inductor")
    xe, re = x.clone().requires_grad_(), rois.clone().requires_grad_()
    xc, rc = x.clone().requires_grad_(), rois.clone().requires_grad_()
    out_e, out_c = fn(xe, re), compiled(xc, rc)
    torch.testing.assert_close(out_c, out_e)
    g = torch.randn_like(out_e)
    out_e.backward(g)
    out_c.backward(g)
    torch.testing.assert_close(xc.grad, xe.grad)
    torch.testing.assert_close(rc.grad, re.grad)


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.align = roiops.RoIAlign(3, 0.5, 2, True)
        self.warp = roiops.RoIWarp(3, 0.5, 2)
        self.pool = roiops.RoIPool(3, 0.5)
        self.ps_align = roiops.PSRoIAlign((3, 1), 0.5, 2)
        self.ps_pool = roiops.PSRoIPool((3, 1), 0.5)
        self.pr_pool = roiops.PrRoIPool(3, 0.5)
        self.rotated = roiops.RoIAlignRotated(3, 0.5, 2)

    def forward(self, x, rois, rotated):
        # [K, 3, 3, 3] and, from the position-sensitive ops, [K, 1, 3, 1]: broadcast.
        return self.align(x, rois) + self.warp(x, rois) + self.pool(x, rois) + self.ps_align(x, rois) * self.ps_pool(
            x, rois) + self.pr_pool(x, rois) + self.rotated(x, rotated)


def test_export_module_using_every_op():
    x, rois = inputs(torch.float32)
    rotated = ROTATED.float()
    m = Head()
    ep = torch.export.export(m, (x, rois, rotated))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"roiops.roi_align.default", "roiops.roi_warp.default", "roiops.roi_pool.default",
            "roiops.ps_roi_align.default", "roiops.ps_roi_pool.default", "roiops.prroi_pool.default",
            "roiops.roi_align_rotated.default"} <= targets
    x2, _ = inputs(torch.float32)
    torch.testing.assert_close(ep.module()(x2, rois, rotated), m(x2, rois, rotated))
