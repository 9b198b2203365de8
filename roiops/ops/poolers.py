"""Multi-level (FPN) RoI pooling: every RoI is pooled from the pyramid level that
matches its size, all levels in one fused op call."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import _validation as v

_OPS = ("roi_align", "roi_warp", "roi_pool")


def fpn_levels(
    rois: Tensor,
    min_level: int,
    max_level: int,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """Pyramid level index (0 = ``min_level``) of each RoI of a ``[K, 5]`` Tensor.

    Level ``k = floor(canonical_level + log2(sqrt(area) / canonical_size) + eps)``
    clamped to ``[min_level, max_level]`` (Feature Pyramid Networks, eq. 1); ``eps``
    keeps boxes of exactly canonical size on their level despite rounding, as in
    torchvision. The choice of level carries no gradient. It is computed in float64
    from the box values whatever their dtype: a float16 area overflows at 256 px
    per side and bfloat16 rounding moves boxes across level boundaries.
    """
    boxes = rois[:, 1:].detach().to(torch.float64)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0)
    k = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_size) + eps)
    k = torch.nan_to_num(k, nan=float(min_level), posinf=float(max_level), neginf=float(min_level))
    return (k.clamp(min_level, max_level) - min_level).to(torch.int64)


class MultiScaleRoIPooler(nn.Module):
    """Pools RoIs from a feature pyramid with roi_align, roi_warp or roi_pool.

    Args:
        output_size: ``PH`` and ``PW`` as an int or a pair.
        scales: spatial scale of each pyramid level, finest first, e.g.
            ``(1/4, 1/8, 1/16, 1/32)`` for FPN levels 2..5. Each must be a power of
            two (``1 / 2**level``) and the levels consecutive.
        op: ``"roi_align"`` (default), ``"roi_warp"`` or ``"roi_pool"``.
        sampling_ratio, aligned, mode, sampling: as for the op (``aligned`` only for
            roi_align, ``sampling_ratio`` and ``sampling`` not for roi_pool).
            ``mode`` defaults to the op's default.
        canonical_size, canonical_level: a box of ``canonical_size`` pixels per side
            maps to ``canonical_level`` (224 and 4, as in FPN and torchvision).

    ``forward(features, boxes)`` takes the list of level maps ``[N, C, H_l, W_l]``
    (same N, C, dtype and device) and boxes as ``Tensor[K, 5]`` or a list of N
    ``Tensor[L_i, 4]`` of any floating dtype; it returns ``[K, C, PH, PW]`` in the
    order of the boxes, in the features' dtype and the finest level's memory format. With
    ``op="roi_align", aligned=False`` it computes what torchvision's
    MultiScaleRoIAlign computes, in one op call instead of one per level, with
    gradients for every level, the boxes (roi_align) and double backward.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scales: Sequence[float],
        op: str = "roi_align",
        sampling_ratio: int = 2,
        aligned: bool = True,
        *,
        mode: str | None = None,
        sampling: str = "bilinear",
        canonical_size: float = 224.0,
        canonical_level: int = 4,
    ):
        super().__init__()
        name = "MultiScaleRoIPooler"
        v.check_choice(name, "op", op, _OPS)
        self.output_size = v.output_size_pair(name, output_size)
        if not scales:
            raise ValueError(f"{name}: scales must name at least one pyramid level")
        levels = []
        for s in scales:
            v.check_scale(name, s)
            level = -math.log2(s)
            if abs(level - round(level)) > 1e-6:
                raise ValueError(f"{name}: every scale must be a power of two (1 / 2**level), got {s}")
            levels.append(round(level))
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"{name}: scales must be consecutive pyramid levels, finest first, got {list(scales)}")
        self.scales = [float(s) for s in scales]
        self.min_level, self.max_level = levels[0], levels[-1]
        self.op = op
        self.sampling_ratio = v.check_sampling_ratio(name, sampling_ratio)
        self.aligned = bool(aligned)
        self.mode = v.check_choice(name, "mode", mode or ("avg" if op == "roi_align" else "max"), v.MODES)
        self.sampling = v.check_choice(name, "sampling", sampling, v.SAMPLINGS)
        self.canonical_size = float(canonical_size)
        self.canonical_level = int(canonical_level)

    def levels(self, rois: Tensor) -> Tensor:
        """Index into ``scales`` of the level each RoI of a ``[K, 5]`` Tensor is pooled from."""
        return fpn_levels(rois, self.min_level, self.max_level, self.canonical_size, self.canonical_level)

    def forward(self, features: Sequence[Tensor], boxes: Tensor | Sequence[Tensor]) -> Tensor:
        name = "MultiScaleRoIPooler"
        features = list(features)
        if len(features) != len(self.scales):
            raise ValueError(f"{name}: got {len(features)} feature maps for {len(self.scales)} scales")
        for i, f in enumerate(features):
            v.check_input(f"{name}: features[{i}]", f)
            if f.shape[:2] != features[0].shape[:2] or f.dtype != features[0].dtype or f.device != features[0].device:
                raise ValueError(
                    f"{name}: every level must share N, C, dtype and device; features[{i}] is "
                    f"{tuple(f.shape)} {f.dtype} on {f.device}, features[0] is "
                    f"{tuple(features[0].shape)} {features[0].dtype} on {features[0].device}"
                )
        rois = v.rois_from_boxes(name, features[0], boxes)
        ph, pw = self.output_size
        ops = torch.ops.roiops
        args = (features, rois, self.levels(rois), self.scales, ph, pw)
        keep = v.needs_argmax(rois, *features)
        if self.op == "roi_align":
            output, _ = ops.roi_align_multilevel(
                *args, self.sampling_ratio, self.aligned, self.mode, self.sampling, keep
            )
        elif self.op == "roi_warp":
            output, _ = ops.roi_warp_multilevel(*args, self.sampling_ratio, self.mode, self.sampling, keep)
        else:
            output, _ = ops.roi_pool_multilevel(*args, self.mode, keep)
        return output

    def extra_repr(self) -> str:
        return (
            f"op={self.op}, output_size={self.output_size}, scales={self.scales}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, mode={self.mode!r}, "
            f"sampling={self.sampling!r}, canonical=({self.canonical_size}, {self.canonical_level})"
        )


class MultiScaleRoIAlign(nn.Module):
    """Drop-in for ``torchvision.ops.MultiScaleRoIAlign``, pooling every level in one
    fused op call (torchvision makes one call, and a device sync, per level).

    Same constructor and ``forward(features: dict, boxes: list, image_shapes)``, so
    any torchvision detector takes it as its ``roi_heads.box_roi_pool`` /
    ``roi_heads.mask_roi_pool`` (assign it after construction: torchvision's
    constructors type-check their poolers against their own class). With the
    defaults it computes what torchvision's computes (roi_align, avg, bilinear,
    ``aligned=False``). The level scales are inferred from the feature and image sizes
    on the first call, as torchvision does (``2 ** round(log2(feature / image))`` of
    the heights), and kept.

    Args:
        featmap_names: the keys of ``features`` to pool from, finest first; one name
            gives single-level pooling.
        output_size, sampling_ratio: as for :func:`roiops.roi_align`.
        canonical_scale, canonical_level: FPN level mapping (224 and 4, eq. 1).
        op, mode, sampling, aligned: roiops' extras, as for
            :class:`MultiScaleRoIPooler` (``aligned`` defaults to torchvision's False).
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | tuple[int, int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        op: str = "roi_align",
        mode: str | None = None,
        sampling: str = "bilinear",
        aligned: bool = False,
    ):
        super().__init__()
        self.featmap_names = list(featmap_names)
        if not self.featmap_names:
            raise ValueError("MultiScaleRoIAlign: featmap_names must name at least one feature map")
        self.output_size = v.output_size_pair("MultiScaleRoIAlign", output_size)
        self.options = dict(op=op, sampling_ratio=sampling_ratio, aligned=aligned, mode=mode, sampling=sampling,
                            canonical_size=canonical_scale, canonical_level=canonical_level)
        # Checks the options now rather than on the first forward.
        MultiScaleRoIPooler(self.output_size, [1.0], **self.options)
        self.pooler: MultiScaleRoIPooler | None = None

    def forward(self, x: dict[str, Tensor], boxes: Sequence[Tensor], image_shapes: Sequence[tuple[int, int]]) -> Tensor:
        missing = [name for name in self.featmap_names if name not in x]
        if missing:
            raise ValueError(f"MultiScaleRoIAlign: features lack {missing}; got {list(x)}")
        features = [x[name] for name in self.featmap_names]
        if self.pooler is None:
            if not image_shapes:
                raise ValueError("MultiScaleRoIAlign: image_shapes must not be empty")
            height = max(int(s[0]) for s in image_shapes)
            scales = [2.0 ** round(math.log2(f.shape[-2] / height)) for f in features]
            self.pooler = MultiScaleRoIPooler(self.output_size, scales, **self.options)
        return self.pooler(features, list(boxes))

    def extra_repr(self) -> str:
        return f"featmap_names={self.featmap_names}, output_size={self.output_size}, {self.options}"
