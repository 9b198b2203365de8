"""roi_pool: Fast R-CNN RoIPool over integer bins of a rounded box."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import _validation as v


def roi_pool(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    *,
    mode: str = "max",
) -> Tensor:
    """Fast R-CNN RoIPool. With ``mode="max"`` the result is
    ``torchvision.ops.roi_pool``'s; ``mode="avg"`` averages exactly the same pixels.

    The box is scaled and rounded half away from zero; bin ``p`` covers rows
    ``[floor(p*h/PH), ceil((p+1)*h/PH))`` of the rounded box (height ``h``, at least 1),
    clipped to the map. An empty bin pools to 0, as does a box with a non-finite
    coordinate. Arguments and output as :func:`roi_align`. The box gradient is zero.
    """
    op = "roi_pool"
    v.check_input(op, input)
    rois = v.rois_from_boxes(op, input, boxes)
    ph, pw = v.output_size_pair(op, output_size)
    output, _ = torch.ops.roiops.roi_pool(
        input,
        rois,
        v.check_scale(op, spatial_scale),
        ph,
        pw,
        v.check_choice(op, "mode", mode, v.MODES),
        v.needs_argmax(input, rois),
    )
    return output


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`; ``forward(input, boxes)``."""

    def __init__(
        self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, *, mode: str = "max"
    ):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.mode = mode

    def forward(self, input: Tensor, boxes: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(input, boxes, self.output_size, self.spatial_scale, mode=self.mode)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"mode={self.mode!r}"
        )
