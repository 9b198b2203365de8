"""prroi_pool: Precise RoI Pooling, the exact mean of the bilinear surface over each bin."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _fx
from .. import _validation as v


def prroi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Precise RoI Pooling (Jiang et al., "Acquisition of Localization Confidence for
    Accurate Object Detection", ECCV 2018).

    The map is read as the bilinear surface ``f(y, x) = sum_ij v[i, j] * max(0, 1 - |y - i|)
    * max(0, 1 - |x - j|)`` (zero outside the map: no clamping, no -0.5 shift). The box
    is scaled (``x1 * s`` ...), its size is ``max(x2 * s - x1 * s, 0)`` (and the same for
    the height), and each bin's output is the exact integral of ``f`` over the bin divided
    by the bin's area: no sampling grid, no rounding. A bin of zero area pools to 0, as
    does a box with a non-finite coordinate.

    Args:
        input: feature map ``[N, C, H, W]``; float16, bfloat16, float32 or float64, NCHW
            or channels_last.
        boxes: ``Tensor[K, 5]`` of ``(batch_index, x1, y1, x2, y2)`` or a list of N
            ``Tensor[L_i, 4]``, in input-image coordinates, of any floating dtype.
        output_size: ``PH`` and ``PW`` as an int or a pair.
        spatial_scale: feature-map pixels per image pixel (e.g. 1/16).

    Returns:
        ``[K, C, PH, PW]`` in the dtype and memory format of ``input``.

    Gradients flow to ``input`` (any order) and, analytically, to the four box
    coordinates (first order, in the boxes' dtype): the op's reason to exist. See
    ``docs/SEMANTICS.md`` for the exact math.
    """
    if not torch.jit.is_scripting():
        node = _fx.node_if_traced(prroi_pool, (input, boxes, output_size, spatial_scale))
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    rois, ph, pw, spatial_scale = v.op_args("prroi_pool", input, boxes, output_size, spatial_scale, "avg")
    # Avg only: there is never an argmax to keep.
    output, _ = torch.ops.roiops.prroi_pool(input, rois, spatial_scale, ph, pw, False)
    return output


class PrRoIPool(nn.Module):
    """Module form of :func:`prroi_pool`; ``forward(input, boxes)``."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0):
        super().__init__()
        # Checked and normalised here, so that the attributes have TorchScript types.
        name = "PrRoIPool"
        self.output_size = v.output_size_pair(name, output_size)
        self.spatial_scale = v.check_scale(name, spatial_scale)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return prroi_pool(input, boxes, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
