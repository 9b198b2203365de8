"""roi_align_rotated: RoIAlign on oriented boxes (detectron2's ROIAlignRotated, mmcv's
roi_align_rotated)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _fx
from .. import _validation as v


def roi_align_rotated(
    input: Tensor,
    rois: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
    clockwise: bool = False,
) -> Tensor:
    """RoIAlign on rotated boxes: each bin is the mean of bilinear samples taken on the
    box's own grid, turned about its centre (oriented detection: aerial images, text).

    Argument order and defaults follow mmcv's ``roi_align_rotated``; at angle 0 the
    result is :func:`roi_align` on the box ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``.

    Args:
        input: feature map ``[N, C, H, W]``; float16, bfloat16, float32 or float64, NCHW
            or channels_last.
        rois: ``Tensor[K, 6]`` of ``(batch_index, cx, cy, w, h, angle)`` or a list of N
            ``Tensor[L_i, 5]`` of ``(cx, cy, w, h, angle)``, in input-image coordinates,
            of any floating dtype. The angle is in degrees, counter-clockwise as seen
            with rows going down (detectron2's convention).
        output_size: ``PH`` and ``PW`` as an int or a pair, each at most 65536.
        spatial_scale: feature-map pixels per image pixel (e.g. 1/16).
        sampling_ratio: samples per bin along each axis, at most 1024; ``<= 0`` is
            adaptive, ``ceil(bin size)`` capped at 64 per axis.
        aligned: shift the centre by -0.5 pixel (pixel centres at half-integers);
            ``False`` clamps the box's width and height to at least 1 feature pixel.
        clockwise: the angle turns clockwise (mmcv's option): the same as negating it.

    Returns:
        ``[K, C, PH, PW]`` in the dtype and memory format of ``input``. A box with a
        non-finite value pools to zeros, and so does one of zero or negative size with
        adaptive sampling. The geometry is computed in float64 whatever the dtypes; the
        angle is reduced modulo 360 degrees first, so huge angles stay exact.

    Gradients flow to ``input`` (any order) and to the box's centre, size and angle
    (first order, in the boxes' dtype; no peer has them). See ``docs/SEMANTICS.md`` for
    the exact math.
    """
    if not torch.jit.is_scripting():
        args = (input, rois, output_size, spatial_scale, sampling_ratio, aligned, clockwise)
        node = _fx.node_if_traced(roi_align_rotated, args)
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    op = "roi_align_rotated"
    boxes, ph, pw, spatial_scale = v.op_args(op, input, rois, output_size, spatial_scale, "avg", v.ROTATED_FIELDS)
    sampling_ratio = v.sampling_args(op, sampling_ratio, "bilinear")
    # Avg only: there is never an argmax to keep.
    output, _ = torch.ops.roiops.roi_align_rotated(
        input, boxes, spatial_scale, ph, pw, sampling_ratio, bool(aligned), bool(clockwise), False
    )
    return output


class RoIAlignRotated(nn.Module):
    """Module form of :func:`roi_align_rotated`; ``forward(input, rois)``."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = True,
        clockwise: bool = False,
    ):
        super().__init__()
        # Checked and normalised here, so that the attributes have TorchScript types.
        name = "RoIAlignRotated"
        self.output_size = v.output_size_pair(name, output_size)
        self.spatial_scale = v.check_scale(name, spatial_scale)
        self.sampling_ratio = v.check_sampling_ratio(name, sampling_ratio)
        self.aligned = bool(aligned)
        self.clockwise = bool(clockwise)

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_align_rotated(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.clockwise
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, clockwise={self.clockwise}"
        )
