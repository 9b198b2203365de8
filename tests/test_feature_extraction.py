"""torchvision's feature extraction (torch.fx) on roiops: each op is one node, as
torchvision's check of its own RoI ops asks (test/test_ops.py, test_is_leaf_node), and
intermediate outputs of a detection model whose RoI layers are roiops' come out of it
as eager mode computes them."""

import pytest
import torch

tv = pytest.importorskip("torchvision", reason="needs torchvision: pip install roiops[models]")

from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names  # noqa: E402

import roiops  # noqa: E402
from roiops.models import mask_rcnn  # noqa: E402


class TwoInputs(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, a, b):
        return self.layer(a, b)


class ThreeInputs(TwoInputs):
    def forward(self, a, b, c):
        return self.layer(a, b, c)


@pytest.mark.parametrize("make", [
    lambda m: TwoInputs(m.RoIAlign((5, 5), 1.0, -1, False)),
    lambda m: TwoInputs(m.RoIPool((5, 5), 1.0)),
    lambda m: ThreeInputs(m.MultiScaleRoIAlign(["0", "1"], 5, 2)),
], ids=["RoIAlign", "RoIPool", "MultiScaleRoIAlign"])
def test_op_is_one_node_for_feature_extraction(make):
    wrapper = make(roiops)
    train_names, eval_names = get_graph_node_names(wrapper)
    n_inputs = len(wrapper.forward.__code__.co_varnames) - 1
    assert train_names == eval_names
    assert len(eval_names) == n_inputs + 1, eval_names
    # torchvision's RoIAlign and RoIPool are one node too (its pooler is three).
    if not isinstance(wrapper, ThreeInputs):
        assert len(get_graph_node_names(make(tv.ops))[1]) == len(eval_names)


class SecondStage(torch.nn.Module):
    """A Mask R-CNN's second stage for given proposals, from the modules of a torchvision
    MaskRCNN: box and mask heads on roiops' poolers. (torchvision's GeneralizedRCNN as a
    whole does not trace, with its own poolers or roiops': it iterates its input list.)"""

    def __init__(self, model, image_shapes):
        super().__init__()
        heads = model.roi_heads
        self.backbone = model.backbone
        self.box_pool, self.box_head, self.box_predictor = heads.box_roi_pool, heads.box_head, heads.box_predictor
        self.mask_pool, self.mask_head, self.mask_predictor = (heads.mask_roi_pool, heads.mask_head,
                                                               heads.mask_predictor)
        self.image_shapes = image_shapes

    def forward(self, images, proposals):
        features = self.backbone(images)
        # FastRCNNPredictor's own forward, without its shape check (control flow, which FX
        # cannot trace).
        boxes = self.box_head(self.box_pool(features, proposals, self.image_shapes)).flatten(1)
        scores, deltas = self.box_predictor.cls_score(boxes), self.box_predictor.bbox_pred(boxes)
        masks = self.mask_predictor(self.mask_head(self.mask_pool(features, proposals, self.image_shapes)))
        return scores, deltas, masks


@pytest.mark.parametrize("variant,roi", [("fpn", "roialign-avg"), ("c4", "roipool-max"), ("fpn", "roiwarp-max")])
def test_feature_extraction_on_a_detection_model(variant, roi):
    torch.manual_seed(0)
    model = mask_rcnn(roi, variant=variant).eval()
    images = torch.randn(2, 3, 128, 128)
    proposals = [torch.tensor([[4.0, 6.0, 60.0, 50.0], [30.0, 20.0, 120.0, 127.0], [0.0, 0.0, 9.0, 12.0]]),
                 torch.tensor([[50.0, 40.0, 90.0, 100.0]])]
    stage = SecondStage(model, [(128, 128)] * 2).eval()
    _, names = get_graph_node_names(stage)
    # Each pooler is one node; take its output and the box scores out of the model.
    (box_pool,) = [n for n in names if n.startswith("box_pool")]
    (mask_pool,) = [n for n in names if n.startswith("mask_pool")]
    extractor = create_feature_extractor(stage, {box_pool: "box_pool", mask_pool: "mask_pool",
                                                 "box_predictor.cls_score": "scores"})
    pooled = {}
    stage.box_pool.register_forward_hook(lambda m, i, out: pooled.__setitem__("box_pool", out))
    stage.mask_pool.register_forward_hook(lambda m, i, out: pooled.__setitem__("mask_pool", out))
    with torch.no_grad():
        scores, _, _ = stage(images, proposals)
        extracted = extractor(images, proposals)
    assert extracted["box_pool"].shape[0] == 4
    torch.testing.assert_close(extracted["box_pool"], pooled["box_pool"], rtol=0, atol=0)
    torch.testing.assert_close(extracted["mask_pool"], pooled["mask_pool"], rtol=0, atol=0)
    torch.testing.assert_close(extracted["scores"], scores, rtol=0, atol=0)
