"""ps_roi_align and ps_roi_pool: position-sensitive RoI pooling (R-FCN), torchvision's ops."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _fx
from .. import _validation as v


def ps_roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> Tensor:
    """Position-sensitive RoIAlign (R-FCN); the result is ``torchvision.ops.ps_roi_align``'s.

    Each of the ``PH x PW`` bins reads its own group of channels: output channel ``c`` of
    bin ``(ph, pw)`` is the mean of bilinear samples of input channel
    ``c * PH * PW + ph * PW + pw``. The geometry is :func:`roi_align`'s with
    ``aligned=True`` (boxes shifted by -0.5 pixel, no minimum size).

    Args:
        input: feature map ``[N, C, H, W]`` with ``C`` a multiple of ``PH * PW``; float16,
            bfloat16, float32 or float64, NCHW or channels_last.
        boxes: ``Tensor[K, 5]`` of ``(batch_index, x1, y1, x2, y2)`` or a list of N
            ``Tensor[L_i, 4]``, in input-image coordinates, of any floating dtype.
        output_size: ``PH`` and ``PW`` as an int or a pair.
        spatial_scale: feature-map pixels per image pixel (e.g. 1/16).
        sampling_ratio: samples per bin along each axis, at most 1024; ``<= 0`` is
            adaptive, ``ceil(bin size)`` capped at 64 per axis.

    Returns:
        ``[K, C / (PH * PW), PH, PW]`` in the dtype and memory format of ``input``. A box
        with a non-finite coordinate pools to zeros, and so does one of zero or negative
        size with adaptive sampling (``sampling_ratio <= 0``).

    Gradients flow to ``input`` (any order) and to the box coordinates (first order,
    as :func:`roi_align`'s; torchvision has none). See ``docs/SEMANTICS.md`` for the
    exact math.
    """
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(ps_roi_align, (input, boxes, output_size, spatial_scale, sampling_ratio))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    rois, ph, pw, spatial_scale = v.op_args("ps_roi_align", input, boxes, output_size, spatial_scale, "avg")
    sampling_ratio = v.sampling_args("ps_roi_align", sampling_ratio, "bilinear")
    if not torch.jit.is_scripting():
        v.check_position_sensitive("ps_roi_align", input, ph, pw)
    # Avg only: there is never an argmax to keep.
    output, _ = torch.ops.roiops.ps_roi_align(input, rois, spatial_scale, ph, pw, sampling_ratio, False)
    return output


def ps_roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Position-sensitive RoIPool (R-FCN); the result is ``torchvision.ops.ps_roi_pool``'s.

    Output channel ``c`` of bin ``(ph, pw)`` is the mean of input channel
    ``c * PH * PW + ph * PW + pw`` over the bin's pixels. The bins are torchvision's,
    which differ from :func:`roi_pool`'s: the box is scaled and rounded half away from
    zero, its size is ``max(x2 - x1, 1)`` (no +1), bin ``p`` covers
    ``[floor(p*h/PH), ceil((p+1)*h/PH))`` offset by the box start and clipped to
    ``[0, H - 1]`` (the last row and column are never read). An empty bin pools to 0,
    as does a box with a non-finite coordinate.

    Arguments as :func:`ps_roi_align` (without ``sampling_ratio``). Returns
    ``[K, C / (PH * PW), PH, PW]``. Gradients flow to ``input`` (any order); the box
    gradient is zero (the box is rounded).
    """
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(ps_roi_pool, (input, boxes, output_size, spatial_scale))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    rois, ph, pw, spatial_scale = v.op_args("ps_roi_pool", input, boxes, output_size, spatial_scale, "avg")
    if not torch.jit.is_scripting():
        v.check_position_sensitive("ps_roi_pool", input, ph, pw)
    output, _ = torch.ops.roiops.ps_roi_pool(input, rois, spatial_scale, ph, pw, False)
    return output


class PSRoIAlign(nn.Module):
    """Module form of :func:`ps_roi_align`; ``forward(input, boxes)``."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, sampling_ratio: int = -1):
        super().__init__()
        # Checked and normalised here, so that the attributes have TorchScript types.
        name = "PSRoIAlign"
        self.output_size = v.output_size_pair(name, output_size)
        self.spatial_scale = v.check_scale(name, spatial_scale)
        self.sampling_ratio = v.check_sampling_ratio(name, sampling_ratio)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return ps_roi_align(input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}"
        )


class PSRoIPool(nn.Module):
    """Module form of :func:`ps_roi_pool`; ``forward(input, boxes)``."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0):
        super().__init__()
        # Checked and normalised here, so that the attributes have TorchScript types.
        name = "PSRoIPool"
        self.output_size = v.output_size_pair(name, output_size)
        self.spatial_scale = v.check_scale(name, spatial_scale)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return ps_roi_pool(input, boxes, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
