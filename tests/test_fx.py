"""torch.fx: every public function of roiops is one call_function node of a symbolically
traced graph, whatever name the caller uses for it; every module traces (the poolers
to one node each, as torchvision's do), and the traced graph computes what eager mode
computes. (tests/test_feature_extraction.py: torchvision's feature extraction.)"""

from collections import OrderedDict

import pytest
import torch
import torch.fx

import roiops
from roiops import fpn_levels, roi_pool  # a caller's own names for the functions

torch.manual_seed(0)
X = torch.randn(2, 3, 16, 20)
ROIS = torch.tensor([[0, 1.37, 2.23, 15.71, 12.13], [1, -3.3, 4.2, 30.1, 28.4], [1, 9.6, 1.1, 21.7, 17.2]])
LEVELS = [X, X[:, :, ::2, ::2].contiguous(), X[:, :, ::4, ::4].contiguous()]
FEATURES = OrderedDict((str(i), f) for i, f in enumerate(LEVELS))
IMAGE_SHAPES = [(64, 80), (60, 70)]


def as_list(rois):
    return [rois[rois[:, 0] == i, 1:] for i in range(2)]


def calls(graph_module):
    """The graph's nodes other than its inputs and output."""
    return [n for n in graph_module.graph.nodes if n.op not in ("placeholder", "output")]


MODULES = {
    "RoIAlign": (lambda: roiops.RoIAlign(5, 1.0), roiops.roi_align, (X, ROIS)),
    "RoIAlign-options": (lambda: roiops.RoIAlign((3, 2), 0.5, 2, True, "max", "nearest"), roiops.roi_align,
                         (X, as_list(ROIS))),
    "RoIPool": (lambda: roiops.RoIPool(5, 1.0), roiops.roi_pool, (X, ROIS)),
    "RoIPool-avg": (lambda: roiops.RoIPool((2, 3), 0.5, "avg"), roiops.roi_pool, (X, as_list(ROIS))),
    "RoIWarp": (lambda: roiops.RoIWarp(4, 0.5, 2, "avg"), roiops.roi_warp, (X, ROIS)),
    # X's 3 channels: one per bin of a 1 x 3 or 3 x 1 output.
    "PSRoIAlign": (lambda: roiops.PSRoIAlign((1, 3), 0.5, 2), roiops.ps_roi_align, (X, ROIS)),
    "PSRoIPool": (lambda: roiops.PSRoIPool((3, 1), 0.5), roiops.ps_roi_pool, (X, as_list(ROIS))),
    "PrRoIPool": (lambda: roiops.PrRoIPool((3, 2), 0.5), roiops.prroi_pool, (X, ROIS)),
    "RoIAlignRotated": (lambda: roiops.RoIAlignRotated((3, 2), 0.5, 2, True, True), roiops.roi_align_rotated,
                        (X, as_list(torch.cat([ROIS, torch.tensor([[30.0], [-75.0], [200.0]])], 1)))),
    "MultiScaleRoIPooler": (lambda: roiops.MultiScaleRoIPooler(3, [0.25, 0.125, 0.0625]), None, (LEVELS, ROIS)),
    "MultiScaleRoIPooler-roi_pool": (lambda: roiops.MultiScaleRoIPooler(3, [0.25, 0.125], "roi_pool"), None,
                                     (LEVELS[:2], as_list(ROIS))),
    "MultiScaleRoIAlign": (lambda: roiops.MultiScaleRoIAlign(["0", "1", "2"], (3, 4), 2), None,
                           (FEATURES, as_list(ROIS), IMAGE_SHAPES)),
    "MultiScaleRoIAlign-roi_warp": (lambda: roiops.MultiScaleRoIAlign(["1", "2"], 3, -1, op="roi_warp"), None,
                                    (FEATURES, as_list(ROIS), IMAGE_SHAPES)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_module_traces_to_one_call_with_eager_results(name):
    make, fn, inputs = MODULES[name]
    module = make()
    graph_module = torch.fx.symbolic_trace(module)
    (node,) = calls(graph_module)
    assert node.op == "call_function"
    if fn is not None:
        assert node.target is fn
    torch.testing.assert_close(graph_module(*inputs), module(*inputs), rtol=0, atol=0)


def test_multiscale_roi_align_traced_before_its_first_call_infers_scales_per_call():
    """A graph holds no state: traced before the module has seen features, it infers
    the level scales on each call, and tracing leaves the module unchanged."""
    module = roiops.MultiScaleRoIAlign(["0", "1"], 3, 2)
    graph_module = torch.fx.symbolic_trace(module)
    assert not module.scales_known
    half = OrderedDict((k, v[:, :, ::2, ::2]) for k, v in FEATURES.items())
    for features, shapes in ((FEATURES, IMAGE_SHAPES), (half, IMAGE_SHAPES)):
        fresh = roiops.MultiScaleRoIAlign(["0", "1"], 3, 2)
        torch.testing.assert_close(graph_module(features, as_list(ROIS), shapes),
                                   fresh(features, as_list(ROIS), shapes), rtol=0, atol=0)
    # Traced after it, the graph keeps the scales the module learned.
    module(FEATURES, as_list(ROIS), IMAGE_SHAPES)
    (node,) = calls(torch.fx.symbolic_trace(module))
    assert list(node.args[4]) == [0.25, 0.125]  # the scales argument of the one call


class UsesFunctions(torch.nn.Module):
    """Calls the public functions by the names callers use: attributes of the package
    and of roiops.ops, and names imported into this module."""

    def forward(self, x, rois):
        a = roiops.roi_align(x, rois, 3, 0.5, sampling_ratio=2)
        b = roi_pool(x, as_list(rois), (3, 3), 0.5)
        c = roiops.ops.roi_warp(x, rois, 3, 0.5)
        levels = fpn_levels(rois, 2, 5)
        return a + b + c, levels


def test_functions_are_leaves_whatever_the_callers_name_for_them():
    module = UsesFunctions()
    graph_module = torch.fx.symbolic_trace(module)
    targets = [n.target for n in calls(graph_module) if n.op == "call_function"]
    for fn in (roiops.roi_align, roiops.roi_pool, roiops.roi_warp, roiops.fpn_levels):
        assert targets.count(fn) == 1
    expected, got = module(X, ROIS), graph_module(X, ROIS)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_traced_graph_keeps_gradients():
    module = roiops.RoIAlign(3, 0.5, 2)
    graph_module = torch.fx.symbolic_trace(module)
    x = X.clone().requires_grad_()
    graph_module(x, ROIS).sum().backward()
    x2 = X.clone().requires_grad_()
    module(x2, ROIS).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)
