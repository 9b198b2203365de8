"""Code written for torchvision.ops keeps working with roiops: the poolers print like
torchvision's, boxes come as one [L, 4] tensor per image in a list or a tuple (also
through TorchScript), malformed boxes raise the AssertionError torchvision raises (as
well as roiops' ValueError or TypeError), and quantized maps, which torchvision's CPU
roi_align takes, are refused with an error that names the way round."""

import warnings
from collections import OrderedDict

import pytest
import torch

import roiops

torch.manual_seed(0)
X = torch.randn(2, 3, 16, 20)
ROIS = torch.tensor([[0, 1.37, 2.23, 15.71, 12.13], [1, -3.3, 4.2, 30.1, 28.4], [1, 9.6, 1.1, 21.7, 17.2],
                     [0, 4.0, 4.0, 9.0, 11.0]])
LEVELS = [X, X[:, :, ::2, ::2].contiguous()]


def per_image(rois, n=2):
    return [rois[rois[:, 0] == i, 1:] for i in range(n)]


def image_order(rois, n=2):
    """The rows of ``rois`` in the order the per-image list puts them."""
    return torch.cat([(rois[:, 0] == i).nonzero()[:, 0] for i in range(n)])


CALLS = {
    "roi_align": lambda x, b: roiops.roi_align(x, b, (3, 2), 0.5, 2, True),
    "roi_warp": lambda x, b: roiops.roi_warp(x, b, 3, 0.5),
    "roi_pool": lambda x, b: roiops.roi_pool(x, b, 3, 0.5, "avg"),
    "RoIAlign": lambda x, b: roiops.RoIAlign(3, 0.5, -1, False, "max")(x, b),
    "RoIWarp": lambda x, b: roiops.RoIWarp(3, 0.5)(x, b),
    "RoIPool": lambda x, b: roiops.RoIPool(3, 0.5)(x, b),
    "MultiScaleRoIPooler": lambda x, b: roiops.MultiScaleRoIPooler(3, [0.5, 0.25], canonical_size=8)(
        [x, x[..., ::2, ::2]], b),
}


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("container", [list, tuple])
def test_boxes_per_image_in_a_list_or_tuple(name, container):
    """One [L, 4] tensor per image, an image without boxes included, pools the same RoIs
    as the [K, 5] tensor, in image order."""
    call = CALLS[name]
    three = torch.cat([ROIS, torch.tensor([[2, 1.0, 1.0, 7.0, 5.0]])])
    x = torch.cat([X, X[:1]])
    boxes = container(per_image(three, 3) + [torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="4 box tensors for a batch of 3"):
        call(x, boxes)
    boxes = container(per_image(three, 3)[:1] + [torch.zeros(0, 4)] + per_image(three, 3)[2:])
    rois = torch.cat([three[three[:, 0] == 0], three[three[:, 0] == 2]])
    torch.testing.assert_close(call(x, boxes), call(x, rois), rtol=0, atol=0)


def test_multiscale_roi_align_takes_a_list_or_a_tuple():
    features = OrderedDict([("0", LEVELS[0]), ("1", LEVELS[1])])
    pool = roiops.MultiScaleRoIAlign(["0", "1"], 3, 2)
    expected = pool(features, per_image(ROIS), [(32, 40)] * 2)
    torch.testing.assert_close(pool(features, tuple(per_image(ROIS)), [(32, 40)] * 2), expected, rtol=0, atol=0)


class ListBoxes(torch.nn.Module):
    """torchvision's test_jit_boxes_list wrapper: boxes typed as List[Tensor]."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        return self.pool(x, boxes)


@pytest.mark.parametrize("pool", [roiops.RoIPool([3, 3], 1.0), roiops.RoIAlign([3, 3], 1.0), roiops.RoIWarp(3, 1.0)],
                         ids=["RoIPool", "RoIAlign", "RoIWarp"])
def test_scripted_modules_take_boxes_per_image(pool):
    x = torch.rand(2, 1, 10, 10)
    box = torch.tensor([[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9], [1, 0, 0, 9, 9]], dtype=torch.float).t()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch itself
        scripted = torch.jit.script(ListBoxes(pool))
    y = scripted(x, [box, box])
    assert y.shape == (10, 1, 3, 3)
    torch.testing.assert_close(y, pool(x, [box, box]), rtol=0, atol=0)


# Boxes that torchvision.ops.roi_align / roi_pool refuse with an AssertionError
# (torch._assert in its check_roi_boxes_shape), and roiops' own type for each.
MALFORMED = {
    "K4 tensor": (ROIS[:, 1:], ValueError, r"boxes must be a \[K, 5\] Tensor"),
    "K6 tensor": (torch.zeros(1, 6), ValueError, r"boxes must be a \[K, 5\] Tensor"),
    "3-d tensor": (ROIS[None], ValueError, r"boxes must be a \[K, 5\] Tensor"),
    "list of L3": ([ROIS[:1, 1:4], ROIS[1:, 1:4]], ValueError, r"boxes\[0\] must be a \[L, 4\] Tensor"),
    "not boxes": (5, TypeError, "boxes must be a Tensor"),
}
FUNCTIONS = {
    "roi_align": roiops.roi_align,
    "roi_pool": roiops.roi_pool,
    "roi_warp": roiops.roi_warp,
    "RoIAlign": roiops.RoIAlign(2),
    "MultiScaleRoIPooler": lambda x, b, size: roiops.MultiScaleRoIPooler(size, [1.0, 0.5])([x, x[..., ::2, ::2]], b),
}


@pytest.mark.parametrize("fn", list(FUNCTIONS))
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_boxes_raise_torchvisions_assertion_error(fn, case):
    boxes, kind, match = MALFORMED[case]
    call = FUNCTIONS[fn]
    args = (X, boxes) if fn == "RoIAlign" else (X, boxes, 2)
    with pytest.raises(AssertionError, match=match) as raised:
        call(*args)
    assert isinstance(raised.value, kind)


def test_torchvision_raises_assertion_error_for_those_boxes():
    tv = pytest.importorskip("torchvision", reason="needs torchvision: pip install roiops[models]")
    for boxes, _, _ in MALFORMED.values():
        for fn in (tv.ops.roi_align, tv.ops.roi_pool):
            with pytest.raises(AssertionError):
                fn(X, boxes, 2)


def quantize(t, dtype=torch.quint8, scale=1 / 64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized tensors are deprecated in torch itself
        return torch.quantize_per_tensor(t, scale, 0 if dtype == torch.qint8 else 70, dtype)


@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint8])
@pytest.mark.parametrize("name", list(CALLS))
def test_quantized_input_is_refused_naming_dequantize(dtype, name):
    with pytest.raises(TypeError, match=r"quantized input \(torch\.q(u)?int8\) is not supported; dequantize"):
        CALLS[name](quantize(X.clamp(-1, 1), dtype), ROIS)


@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint8])
def test_dequantized_pooling_is_torchvisions_quantized_roi_align(dtype):
    """The way round the error names (dequantize, pool, quantize the result with the map's
    parameters) gives torchvision's quantized roi_align to within one step (its kernel
    rounds its own float sums)."""
    tv = pytest.importorskip("torchvision", reason="needs torchvision: pip install roiops[models]")
    qx = quantize(X[:1].clamp(-1, 1), dtype)
    rois = torch.tensor([[0, 1.0, 2.0, 15.0, 12.0], [0, 4.0, 3.0, 9.0, 11.5]])  # exact in steps of 1/4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        theirs = tv.ops.roi_align(qx, quantize(rois, dtype, 1 / 4), 3, 0.5, 2, False)
        ours = torch.quantize_per_tensor(roiops.roi_align(qx.dequantize(), rois, 3, 0.5, 2, False),
                                         qx.q_scale(), qx.q_zero_point(), dtype)
    steps = (ours.int_repr().int() - theirs.int_repr().int()).abs()
    assert steps.max() <= 1
    assert (steps == 0).float().mean() > 0.9


def test_multiscale_roi_align_prints_like_torchvisions():
    tv = pytest.importorskip("torchvision", reason="needs torchvision: pip install roiops[models]")
    for args in ((["0"], (7, 7), 2), (["0", "1", "2", "3"], 7, 0), (["feat1", "feat3"], [14, 14], -1)):
        assert repr(roiops.MultiScaleRoIAlign(*args)) == repr(tv.ops.MultiScaleRoIAlign(*args))
    # One line inside a model's print, as torchvision's.
    heads = torch.nn.Sequential(roiops.MultiScaleRoIAlign(["0"], 7, 2))
    assert repr(heads) == repr(torch.nn.Sequential(tv.ops.MultiScaleRoIAlign(["0"], 7, 2)))


def test_pooler_reprs_are_their_constructor_calls():
    """torchvision's form, then roiops' options where they are not the defaults; evaluated,
    each repr builds an equal pooler."""
    ns = {"MultiScaleRoIAlign": roiops.MultiScaleRoIAlign, "MultiScaleRoIPooler": roiops.MultiScaleRoIPooler}
    assert repr(roiops.MultiScaleRoIAlign(["0"], (7, 7), 2)) == \
        "MultiScaleRoIAlign(featmap_names=['0'], output_size=(7, 7), sampling_ratio=2)"
    extras = roiops.MultiScaleRoIAlign(["0", "1"], 14, 2, canonical_scale=56, op="roi_pool", mode="avg")
    assert repr(extras) == ("MultiScaleRoIAlign(featmap_names=['0', '1'], output_size=(14, 14), sampling_ratio=2, "
                            "canonical_scale=56, op='roi_pool', mode='avg')")
    pooler = roiops.MultiScaleRoIPooler(7, [0.25, 0.125], "roi_warp", 0, mode="avg", sampling="nearest")
    assert repr(pooler) == ("MultiScaleRoIPooler(output_size=(7, 7), scales=[0.25, 0.125], op='roi_warp', "
                            "sampling_ratio=0, aligned=True, mode='avg', sampling='nearest', canonical_size=224.0, "
                            "canonical_level=4)")
    for module in (extras, pooler, roiops.MultiScaleRoIAlign(["a"], 5, -1, aligned=True, sampling="nearest")):
        rebuilt = eval(repr(module), ns)
        assert repr(rebuilt) == repr(module)
        if isinstance(module, roiops.MultiScaleRoIAlign):
            assert rebuilt.options == module.options
