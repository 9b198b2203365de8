"""Multi-level (FPN) RoI pooling: every RoI is pooled from the pyramid level that
matches its size, all levels in one fused op call."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _fx
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
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(fpn_levels, (rois, min_level, max_level, canonical_size, canonical_level, eps))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    boxes = rois[:, 1:].detach().to(torch.float64)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0)
    k = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_size) + eps)
    k = torch.nan_to_num(k, nan=float(min_level), posinf=float(max_level), neginf=float(min_level))
    return (k.clamp(min_level, max_level) - min_level).to(torch.int64)


def pyramid_levels(name: str, scales: list[float]) -> tuple[int, int]:
    """The first and last pyramid level of ``scales`` (level = -log2(scale)), which must
    be consecutive powers of two, finest first."""
    if len(scales) == 0:
        raise ValueError(f"{name}: scales must name at least one pyramid level")
    levels: list[int] = []
    for s in scales:
        level = -math.log(s) / math.log(2.0)  # TorchScript has no math.log2
        if abs(level - round(level)) > 1e-6:
            raise ValueError(f"{name}: every scale must be a power of two (1 / 2**level), got {s}")
        levels.append(int(round(level)))
    for i in range(len(levels)):
        if levels[i] != levels[0] + i:
            raise ValueError(f"{name}: scales must be consecutive pyramid levels, finest first, got {scales}")
    return levels[0], levels[-1]


def _pool_levels(
    features: list[Tensor],
    boxes: Tensor | list[Tensor],
    output_size: tuple[int, int],
    scales: list[float],
    op: str,
    sampling_ratio: int,
    aligned: bool,
    mode: str,
    sampling: str,
    canonical_size: float,
    canonical_level: int,
) -> Tensor:
    """MultiScaleRoIPooler's forward with its options as arguments (already checked by its
    constructor), so that an FX graph can call it as one node."""
    name = "MultiScaleRoIPooler"
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(_pool_levels, (features, boxes, output_size, scales, op, sampling_ratio, aligned,
                                                 mode, sampling, canonical_size, canonical_level))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    if len(features) != len(scales):
        raise ValueError(f"{name}: got {len(features)} feature maps for {len(scales)} scales")
    if torch.jit.is_scripting():
        # TorchScript has checked the argument types and the op checks the values.
        rois = v.script_rois(name, features[0], boxes)
    else:
        features = list(features)
        with v.traced_checks():
            for i, f in enumerate(features):
                v.check_input(f"{name}: features[{i}]", f)
                if (f.shape[:2] != features[0].shape[:2] or f.dtype != features[0].dtype
                        or f.device != features[0].device):
                    raise ValueError(
                        f"{name}: every level must share N, C, dtype and device; features[{i}] is "
                        f"{tuple(f.shape)} {f.dtype} on {f.device}, features[0] is "
                        f"{tuple(features[0].shape)} {features[0].dtype} on {features[0].device}"
                    )
            rois = v.rois_from_boxes(name, features[0], boxes)
    ph, pw = output_size
    min_level, max_level = pyramid_levels(name, scales)
    levels = fpn_levels(rois, min_level, max_level, canonical_size, canonical_level)
    keep = v.needs_argmax([rois] + features)
    if op == "roi_align":
        output, _ = torch.ops.roiops.roi_align_multilevel(
            features, rois, levels, scales, ph, pw, sampling_ratio, aligned, mode, sampling, keep
        )
    elif op == "roi_warp":
        output, _ = torch.ops.roiops.roi_warp_multilevel(
            features, rois, levels, scales, ph, pw, sampling_ratio, mode, sampling, keep
        )
    else:
        output, _ = torch.ops.roiops.roi_pool_multilevel(features, rois, levels, scales, ph, pw, mode, keep)
    return output


def _select_features(x: dict[str, Tensor], featmap_names: list[str]) -> list[Tensor]:
    features: list[Tensor] = []
    for name in featmap_names:
        if name not in x:
            raise ValueError(f"MultiScaleRoIAlign: features lack '{name}'; got {list(x.keys())}")
        features.append(x[name])
    return features


def _infer_scales(features: list[Tensor], image_shapes: list[tuple[int, int]]) -> list[float]:
    """Level scales from the feature and image heights, as torchvision infers them."""
    if len(image_shapes) == 0:
        raise ValueError("MultiScaleRoIAlign: image_shapes must not be empty")
    height = max([s[0] for s in image_shapes])
    scales = [2.0 ** round(math.log(f.shape[-2] / height) / math.log(2.0)) for f in features]
    pyramid_levels("MultiScaleRoIAlign", scales)  # checks them
    return scales


def _multiscale_roi_align(
    x: dict[str, Tensor],
    boxes: list[Tensor],
    image_shapes: list[tuple[int, int]],
    featmap_names: list[str],
    scales: list[float] | None,
    output_size: tuple[int, int],
    op: str,
    sampling_ratio: int,
    aligned: bool,
    mode: str,
    sampling: str,
    canonical_size: float,
    canonical_level: int,
) -> Tensor:
    """MultiScaleRoIAlign's forward as one function, which an FX graph calls as one node;
    ``scales`` None infers them from this call's sizes."""
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(_multiscale_roi_align, (x, boxes, image_shapes, featmap_names, scales, output_size,
                                                          op, sampling_ratio, aligned, mode, sampling, canonical_size,
                                                          canonical_level))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    features = _select_features(x, featmap_names)
    if scales is None:
        if torch.jit.is_scripting():
            scales = _infer_scales(features, image_shapes)
        else:
            with v.traced_checks():
                scales = _infer_scales(features, image_shapes)
    return _pool_levels(features, boxes, output_size, scales, op, sampling_ratio, aligned, mode, sampling,
                        canonical_size, canonical_level)


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
        scales: list[float],
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
        self.scales = [v.check_scale(name, s) for s in scales]
        self.min_level, self.max_level = pyramid_levels(name, self.scales)
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

    def forward(self, features: list[Tensor], boxes: Tensor | list[Tensor]) -> Tensor:
        return _pool_levels(
            features, boxes, self.output_size, self.scales, self.op, self.sampling_ratio, self.aligned, self.mode,
            self.sampling, self.canonical_size, self.canonical_level,
        )

    def extra_repr(self) -> str:
        # The constructor's arguments, as torchvision's modules print theirs.
        return (
            f"output_size={self.output_size}, scales={self.scales}, op={self.op!r}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, mode={self.mode!r}, "
            f"sampling={self.sampling!r}, canonical_size={self.canonical_size}, canonical_level={self.canonical_level}"
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
        featmap_names: list[str],
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
        # The level scales are known on the first call; this pooler, built with
        # placeholder scales, checks and holds every other option.
        self.pooler = MultiScaleRoIPooler(
            output_size, [2.0**-i for i in range(len(self.featmap_names))], op, sampling_ratio, aligned,
            mode=mode, sampling=sampling, canonical_size=canonical_scale, canonical_level=canonical_level,
        )
        self.scales_known = False
        self._sampling_ratio_arg = int(sampling_ratio)  # as given, for a repr like torchvision's

    # A dict of mixed types has no TorchScript type; scripting skips this property.
    __jit_unused_properties__ = ["options"]

    @property
    def options(self) -> dict:
        """The pooling options (op, sampling_ratio, aligned, mode, sampling, canonical level)."""
        p = self.pooler
        return dict(op=p.op, sampling_ratio=p.sampling_ratio, aligned=p.aligned, mode=p.mode, sampling=p.sampling,
                    canonical_size=p.canonical_size, canonical_level=p.canonical_level)

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        traced = False
        if not torch.jit.is_scripting():
            traced = _fx.find_proxy(x, image_shapes) is not None
        if not self.scales_known and not traced:
            self.infer_scales(_select_features(x, self.featmap_names), image_shapes)
        # An FX graph holds no state: traced before the first call, it infers the scales
        # on every call (as torchvision's traced pooler does).
        scales: list[float] | None = None
        if self.scales_known:
            scales = self.pooler.scales
        p = self.pooler
        return _multiscale_roi_align(
            x, boxes, image_shapes, self.featmap_names, scales, p.output_size, p.op, p.sampling_ratio, p.aligned,
            p.mode, p.sampling, p.canonical_size, p.canonical_level,
        )

    def infer_scales(self, features: list[Tensor], image_shapes: list[tuple[int, int]]) -> None:
        """Level scales from the feature and image heights, as torchvision does."""
        if torch.jit.is_scripting():
            scales = _infer_scales(features, image_shapes)
        else:
            with v.traced_checks():
                scales = _infer_scales(features, image_shapes)
        self.pooler.scales = scales
        self.pooler.min_level, self.pooler.max_level = pyramid_levels("MultiScaleRoIAlign", scales)
        self.scales_known = True

    def __repr__(self) -> str:
        # torchvision's one-line repr, then roiops' own options where they differ from
        # their defaults (the pooler inside is an implementation detail).
        p = self.pooler
        text = (f"{type(self).__name__}(featmap_names={self.featmap_names}, output_size={p.output_size}, "
                f"sampling_ratio={self._sampling_ratio_arg}")
        scale = p.canonical_size
        extras = [("canonical_scale", int(scale) if scale.is_integer() else scale, 224),
                  ("canonical_level", p.canonical_level, 4),
                  ("op", p.op, "roi_align"), ("mode", p.mode, "avg" if p.op == "roi_align" else "max"),
                  ("sampling", p.sampling, "bilinear"), ("aligned", p.aligned, False)]
        for key, value, default in extras:
            if value != default:
                text += f", {key}={value!r}"
        return text + ")"
