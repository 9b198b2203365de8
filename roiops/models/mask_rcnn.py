"""A small Mask R-CNN assembled from torchvision.models.detection, with roiops' RoI
layers: the end-to-end check of the ops (the Mask R-CNN paper's Table 2c/2d ablation).

torchvision supplies everything but the RoI layers and the backbone: the RPN,
anchors, box coding, proposal sampling, losses, post-processing and mask pasting.
The variants follow the paper's architectures at a size that trains in minutes on
two CPU cores:

- ``"c4"``: a ResNet-style backbone to stride 16 (or 32 with ``stride=32``, the
  paper's Table 2d "C5" features), 14x14 RoI features, and a res5-style stage run on
  each RoI that the box and mask branches share (Figure 4, left).
- ``"fpn"``: the same backbone with a feature pyramid (strides 4-16), RoIs pooled
  from their level by :class:`roiops.MultiScaleRoIAlign`, torchvision's FPN heads.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork

from ..ops import MultiScaleRoIAlign


@dataclasses.dataclass(frozen=True)
class RoILayer:
    """One row of the ablation: which op pools RoI features, and how.

    ``op`` is ``"roi_pool"``, ``"roi_warp"`` or ``"roi_align"``; ``mode`` ``"max"`` or
    ``"avg"``; ``sampling`` ``"bilinear"`` or ``"nearest"`` (not for roi_pool);
    ``aligned`` only for roi_align (False is the paper's RoIAlign, True detectron2's).
    """

    op: str
    mode: str
    sampling: str = "bilinear"
    aligned: bool = False

    @property
    def name(self) -> str:
        base = {"roi_pool": "roipool", "roi_warp": "roiwarp", "roi_align": "roialign"}[self.op]
        parts = [base, self.mode]
        if self.op != "roi_pool" and self.sampling != "bilinear":
            parts.append(self.sampling)
        if self.aligned:
            parts.append("aligned")
        return "-".join(parts)


# Every row of the ablation, by name. The first five are Table 2c's.
ROI_LAYERS = {
    layer.name: layer
    for layer in (
        RoILayer("roi_pool", "max"),
        RoILayer("roi_warp", "max"),
        RoILayer("roi_warp", "avg"),
        RoILayer("roi_align", "max"),
        RoILayer("roi_align", "avg"),
        RoILayer("roi_align", "avg", sampling="nearest"),
        RoILayer("roi_align", "avg", aligned=True),
    )
}


def roi_layer(spec: str | RoILayer) -> RoILayer:
    if isinstance(spec, RoILayer):
        return spec
    if spec not in ROI_LAYERS:
        raise ValueError(f"unknown RoI layer {spec!r}; choose one of {sorted(ROI_LAYERS)}")
    return ROI_LAYERS[spec]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


class BasicBlock(nn.Module):
    """A ResNet basic block; a strided 1x1 projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm=nn.BatchNorm2d):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), norm(cout),
        )
        self.skip = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    """Stem (stride 2) and stages of one basic block each, every stage halving the
    resolution: ``widths[i]`` channels at stride ``2 ** (i + 1)``. ``forward`` returns
    every stage's output, finest first, so a C4 model reads the last one and an FPN
    the last three."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        self.stem = _conv_bn(3, widths[0], 2)
        self.stages = nn.ModuleList(
            BasicBlock(cin, cout, 2) for cin, cout in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class SingleLevel(nn.Module):
    """The C4 backbone for torchvision's detectors: one feature map named "0"."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        self.body = SmallResNet(widths)
        self.out_channels = widths[-1]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return OrderedDict([("0", self.body(x)[-1])])


class Pyramid(nn.Module):
    """The FPN backbone: the last three stages through a feature pyramid."""

    def __init__(self, widths: tuple[int, ...], channels: int):
        super().__init__()
        self.body = SmallResNet(widths)
        self.fpn = FeaturePyramidNetwork(list(widths[-3:]), channels)
        self.out_channels = channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        levels = self.body(x)[-3:]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(levels)))


class Res5Head(nn.Module):
    """The res5-style stage run on every RoI (stride 2: 14x14 -> 7x7), shared by the
    box and the mask branch as in the paper's C4 head. ``fc`` (the box branch) maps
    the 7x7 result to a vector through one fully connected layer: at this width a
    global average (ResNet's, over 2048 channels) would leave the box regressor no
    spatial layout to work from.

    It normalises with GroupNorm: BatchNorm statistics over RoIs would differ between
    the box pass (sampled RoIs, mostly background), the mask pass (positives only) and
    inference (detections), which the shared stage cannot all fit."""

    def __init__(self, cin: int, cout: int, shared: nn.Module | None = None, fc: int = 0, resolution: int = 7):
        super().__init__()
        self.stage = shared if shared is not None else BasicBlock(cin, cout, 2, norm=group_norm)
        self.fc = (nn.Sequential(nn.Flatten(), nn.Linear(cout * resolution**2, fc), nn.ReLU(inplace=True))
                   if fc else None)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage(x)
        return self.fc(x) if self.fc is not None else x


class C4MaskPredictor(nn.Sequential):
    """Deconvolution to twice the head's resolution, then per-class mask logits."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__(nn.ConvTranspose2d(cin, cin, 2, 2), nn.ReLU(inplace=True), nn.Conv2d(cin, num_classes, 1))


def _with_poolers(model: MaskRCNN, box_pool: nn.Module, mask_pool: nn.Module) -> MaskRCNN:
    # torchvision's constructors accept only its own MultiScaleRoIAlign as a pooler
    # (an isinstance check), so roiops' drop-in goes in after construction.
    model.roi_heads.box_roi_pool = box_pool
    model.roi_heads.mask_roi_pool = mask_pool
    return model


def mask_rcnn(
    roi: str | RoILayer = "roialign-avg",
    num_classes: int = 6,
    *,
    variant: str = "c4",
    stride: int = 16,
    image_size: int = 128,
    widths: tuple[int, ...] = (32, 48, 64, 96, 128),
    head_channels: int = 64,
    sampling_ratio: int = 2,
    anchor_sizes: tuple[int, ...] | None = None,
    **kwargs,
) -> MaskRCNN:
    """A torchvision ``MaskRCNN`` whose RoI layers are roiops ops.

    Args:
        roi: the RoI layer of both branches, a name of :data:`ROI_LAYERS` (e.g.
            ``"roipool-max"``, ``"roiwarp-avg"``, ``"roialign-max"``) or a
            :class:`RoILayer`.
        num_classes: including the background.
        variant: ``"c4"`` (single feature map, shared res5-style head) or ``"fpn"``.
        stride: the C4 feature stride, 16 (Table 2c) or 32 (Table 2d); ``widths``
            gives one backbone stage per factor of two, so stride 32 uses all five.
        image_size: images are resized to this (min and max side).
        head_channels: width of the res5-style head (C4) or of the pyramid (FPN).
        sampling_ratio: of roi_align / roi_warp.
        anchor_sizes: RPN anchor sides in pixels of the resized image (C4: all on the
            one map; FPN: the finest three, one per level). Default: 12, 24, 48 and 96
            at ``image_size`` 128 (the synthetic data's size, objects of 12-60 px),
            scaled with ``image_size``, since the model resizes images and boxes.
        kwargs: passed on to ``torchvision.models.detection.MaskRCNN``.
    """
    layer = roi_layer(roi)
    if anchor_sizes is None:
        anchor_sizes = tuple(round(side * image_size / 128) for side in (12, 24, 48, 96))
    pool_kw = dict(op=layer.op, mode=layer.mode, aligned=layer.aligned)
    if layer.op != "roi_pool":
        pool_kw["sampling"] = layer.sampling
    defaults = dict(min_size=image_size, max_size=image_size, box_detections_per_img=50,
                    rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                    rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150,
                    box_batch_size_per_image=32, rpn_batch_size_per_image=128)
    defaults.update(kwargs)
    ratios = (0.5, 1.0, 2.0)
    if variant == "c4":
        stages = {16: 4, 32: 5}.get(stride)
        if stages is None or len(widths) < stages:
            raise ValueError(f"c4 stride must be 16 or 32 with enough widths, got {stride} with {widths}")
        backbone = SingleLevel(widths[:stages])
        c = backbone.out_channels
        pool = MultiScaleRoIAlign(["0"], 14, sampling_ratio, **pool_kw)
        mask_pool = MultiScaleRoIAlign(["0"], 14, sampling_ratio, **pool_kw)
        box_head = Res5Head(c, head_channels, fc=256)
        mask_head = Res5Head(c, head_channels, shared=box_head.stage)
        model = MaskRCNN(
            backbone, None,
            rpn_anchor_generator=AnchorGenerator((anchor_sizes,), (ratios,)),
            box_head=box_head, box_predictor=FastRCNNPredictor(256, num_classes),
            mask_head=mask_head, mask_predictor=C4MaskPredictor(head_channels, num_classes),
            **defaults,
        )
        return _with_poolers(model, pool, mask_pool)
    if variant == "fpn":
        backbone = Pyramid(widths[:4], head_channels)
        names = ["0", "1", "2"]
        pool = MultiScaleRoIAlign(names, 7, sampling_ratio, canonical_scale=56, **pool_kw)
        mask_pool = MultiScaleRoIAlign(names, 14, sampling_ratio, canonical_scale=56, **pool_kw)
        model = MaskRCNN(
            backbone, None,
            rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in anchor_sizes[:3]), (ratios,) * 3),
            box_head=TwoMLPHead(head_channels * 49, 256), box_predictor=FastRCNNPredictor(256, num_classes),
            mask_head=MaskRCNNHeads(head_channels, (head_channels,) * 2, 1),
            mask_predictor=MaskRCNNPredictor(head_channels, head_channels, num_classes),
            **defaults,
        )
        return _with_poolers(model, pool, mask_pool)
    raise ValueError(f"variant must be 'c4' or 'fpn', got {variant!r}")
