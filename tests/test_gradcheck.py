"""gradcheck / gradgradcheck in float64: input gradients to second order for every op
(the position-sensitive ones included), mode and sampling, and box-coordinate gradients
for bilinear roi_align, ps_roi_align, prroi_pool and roi_align_rotated (centre, size and
angle)."""

import itertools

import pytest
import torch

import roiops

torch.manual_seed(0)
X = torch.randn(2, 3, 9, 11, dtype=torch.float64)
# The position-sensitive ops' map: 2 channels for each of the 3 x 2 bins.
X_PS = torch.randn(2, 12, 9, 11, dtype=torch.float64)
# Away from rounding ties and pixel borders, where the ops are not differentiable.
ROIS = torch.tensor(
    [
        [0, 1.37, 2.23, 15.71, 12.13],
        [1, -3.3, 4.2, 30.1, 18.4],
        [0, 5.2, 5.3, 6.1, 6.35],  # smaller than a bin: the min-size clamp is active
        [1, 9.6, 1.1, 21.7, 17.2],
        [0, 14.1, 13.3, 3.2, 2.1],  # inverted
    ],
    dtype=torch.float64,
)
# roi_align_rotated's boxes (cx, cy, w, h, angle): ROIS' boxes turned by angles in every
# quadrant and beyond +-360 degrees.
ROTATED = torch.cat(
    [(ROIS[:, 1:3] + ROIS[:, 3:5]) / 2, ROIS[:, 3:5] - ROIS[:, 1:3],
     torch.tensor([[17.3], [-63.1], [101.7], [200.5], [-370.2]], dtype=torch.float64)],
    dim=1,
)

VARIANTS = [
    ("roi_align", dict(sampling_ratio=sr, aligned=al, mode=m, sampling=s))
    for sr, al, m, s in itertools.product([2, -1], [True, False], ["avg", "max"], ["bilinear", "nearest"])
] + [
    ("roi_warp", dict(sampling_ratio=sr, mode=m, sampling=s))
    for sr, m, s in itertools.product([2, -1], ["avg", "max"], ["bilinear", "nearest"])
] + [("roi_pool", dict(mode=m)) for m in ["avg", "max"]] + [
    ("ps_roi_align", dict(sampling_ratio=sr)) for sr in [2, -1]
] + [("ps_roi_pool", {}), ("prroi_pool", {})] + [
    ("roi_align_rotated", dict(sampling_ratio=sr, aligned=al, clockwise=cw))
    for sr, (al, cw) in itertools.product([2, -1], [(True, False), (False, True)])
]


def ids(v):
    return v[0] + "-" + "-".join(str(x) for x in v[1].values())


def input_for(op):
    return X_PS if op.startswith("ps_") else X


def coords_for(op):
    return ROTATED if op == "roi_align_rotated" else ROIS[:, 1:]


def call(op, kwargs, x, coords):
    rois = torch.cat([ROIS[:, :1], coords], dim=1)
    return getattr(roiops, op)(x, rois, (3, 2), 0.5, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_input_gradcheck_and_gradgradcheck(variant):
    op, kwargs = variant
    x = input_for(op).clone().requires_grad_()
    f = lambda x: call(op, kwargs, x, coords_for(op))  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_box_gradcheck(variant):
    """Analytic box gradients for bilinear roi_align, ps_roi_align, prroi_pool and
    roi_align_rotated; exactly zero elsewhere."""
    op, kwargs = variant
    coords = coords_for(op).clone().requires_grad_()
    x = input_for(op).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, c: call(op, kwargs, x, c), (x, coords))
    (g,) = torch.autograd.grad(call(op, kwargs, input_for(op), coords).sum(), coords)
    differentiable = op in ("ps_roi_align", "prroi_pool", "roi_align_rotated") or (
        op == "roi_align" and kwargs["sampling"] == "bilinear"
    )
    assert bool(g.abs().sum() > 0) == differentiable


def test_second_order_through_boxes_is_refused():
    coords = ROIS[:, 1:].clone().requires_grad_()
    x = X.clone().requires_grad_()
    out = call("roi_align", dict(sampling_ratio=2, aligned=True), x, coords)
    (g,) = torch.autograd.grad(out.pow(2).sum(), coords, create_graph=True)
    with pytest.raises(NotImplementedError, match="second derivatives through the box"):
        g.sum().backward()


class _Cut(torch.autograd.Function):
    """Passes a tensor on and returns no gradient for it."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return None


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_a_node_reached_without_a_gradient_passes_none_on(variant):
    """Autograd does not hand these ops zero-filled gradients (the int32 argmax's
    would be as large as the output), so a node reached through a Function that
    returns no gradient gets None, and contributes nothing."""
    op, kwargs = variant
    coords = coords_for(op).clone().requires_grad_()
    x = input_for(op).clone().requires_grad_()
    loss = _Cut.apply(call(op, kwargs, x, coords)).sum() + x.sum() + coords.sum()
    loss.backward()
    assert torch.equal(x.grad, torch.ones_like(x)) and torch.equal(coords.grad, torch.ones_like(coords))


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_a_multilevel_node_reached_without_a_gradient_passes_none_on(mode):
    maps = [X.clone().requires_grad_(), X[:, :, ::2, ::2].clone().requires_grad_()]
    levels = torch.tensor([0, 1, 0, 1, 1])
    out, _ = torch.ops.roiops.roi_pool_multilevel(maps, ROIS, levels, [0.5, 0.25], 3, 2, mode, True)
    (_Cut.apply(out).sum() + sum(m.sum() for m in maps)).backward()
    assert all(torch.equal(m.grad, torch.ones_like(m)) for m in maps)


def test_prroi_pool_box_gradient_holds_at_integer_bin_edges():
    """prroi_pool's bin mean is continuously differentiable in the box (the hat is
    continuous; its kinks only bend the gradient), so gradcheck passes with bin edges on
    pixel centres, the map border and beyond it too (docs/SEMANTICS.md)."""
    coords = torch.tensor([[1.0, 2.0, 5.0, 6.0], [0.0, 0.0, 10.0, 8.0], [-1.0, 3.0, 2.0, 9.0]],
                          dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([[0.0], [1.0], [0.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c: roiops.prroi_pool(X, torch.cat([batch, c], 1), 3), (coords,))
