"""roi_warp: roi_align's sampling on a box rounded to the feature grid (RoIWarp)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _fx
from .. import _validation as v


def roi_warp(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    mode: str = "max",
    sampling: str = "bilinear",
) -> Tensor:
    """RoIWarp of the Mask R-CNN ablation (Table 2c): the box is scaled and rounded
    half away from zero to the feature grid, then sampled exactly like
    :func:`roi_align` with ``aligned=False``.

    Arguments as :func:`roi_align` (without ``aligned``); ``mode`` defaults to
    ``"max"`` as in the paper. Returns ``[K, C, PH, PW]`` in the input's dtype and
    memory format. The rounding makes the box gradient zero; the input gradient is
    exact, to any order.
    """
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(roi_warp, (input, boxes, output_size, spatial_scale, sampling_ratio, mode, sampling))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    rois, ph, pw, spatial_scale = v.op_args("roi_warp", input, boxes, output_size, spatial_scale, mode)
    sampling_ratio = v.sampling_args("roi_warp", sampling_ratio, sampling)
    output, _ = torch.ops.roiops.roi_warp(
        input, rois, spatial_scale, ph, pw, sampling_ratio, mode, sampling, v.needs_argmax([input, rois])
    )
    return output


class RoIWarp(nn.Module):
    """Module form of :func:`roi_warp`; ``forward(input, boxes)``."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        mode: str = "max",
        sampling: str = "bilinear",
    ):
        super().__init__()
        # Checked and normalised here, so that the attributes have TorchScript types.
        name = "RoIWarp"
        self.output_size = v.output_size_pair(name, output_size)
        self.spatial_scale = v.check_scale(name, spatial_scale)
        self.sampling_ratio = v.check_sampling_ratio(name, sampling_ratio)
        self.mode = v.check_choice(name, "mode", mode, v.MODES)
        self.sampling = v.check_choice(name, "sampling", sampling, v.SAMPLINGS)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return roi_warp(
            input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.mode, self.sampling
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, mode={self.mode!r}, "
            f"sampling={self.sampling!r}"
        )
