"""roi_pool: Fast R-CNN RoIPool over integer bins of a rounded box."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _fx
from .. import _validation as v


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    mode: str = "max",
) -> Tensor:
    """Fast R-CNN RoIPool. With ``mode="max"`` the result is
    ``torchvision.ops.roi_pool``'s; ``mode="avg"`` averages exactly the same pixels.

    The box is scaled and rounded half away from zero; bin ``p`` covers rows
    ``[floor(p*h/PH), ceil((p+1)*h/PH))`` of the rounded box (height ``h``, at least 1),
    clipped to the map. An empty bin pools to 0, as does a box with a non-finite
    coordinate. Arguments and output as :func:`roi_align`. The box gradient is zero.
    """
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(roi_pool, (input, boxes, output_size, spatial_scale, mode))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    rois, ph, pw, spatial_scale = v.op_args("roi_pool", input, boxes, output_size, spatial_scale, mode)
    output, _ = torch.ops.roiops.roi_pool(input, rois, spatial_scale, ph, pw, mode, v.needs_argmax([input, rois]))
    return output


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`; ``forward(input, boxes)``."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, mode: str = "max"):
        super().__init__()
        # Checked and normalised here, so that the attributes have TorchScript types.
        name = "RoIPool"
        self.output_size = v.output_size_pair(name, output_size)
        self.spatial_scale = v.check_scale(name, spatial_scale)
        self.mode = v.check_choice(name, "mode", mode, v.MODES)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return roi_pool(input, boxes, self.output_size, self.spatial_scale, self.mode)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"mode={self.mode!r}"
        )
