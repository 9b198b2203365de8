"""roi_align: bilinear (or nearest) sampling of an unquantized box (Mask R-CNN)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _fx
from .. import _validation as v


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    mode: str = "avg",
    sampling: str = "bilinear",
) -> Tensor:
    """Pool each box of ``boxes`` from ``input`` into a fixed ``output_size`` grid.

    Argument order and defaults match ``torchvision.ops.roi_align``; with the defaults
    ``mode="avg", sampling="bilinear"`` the result is torchvision's.

    Args:
        input: feature map ``[N, C, H, W]``; float16, bfloat16, float32 or float64,
            NCHW or channels_last (the output takes the memory format PyTorch's own
            ops would, ``input.suggest_memory_format()``); H and W below 2^31.
        boxes: ``Tensor[K, 5]`` of ``(batch_index, x1, y1, x2, y2)`` or a list of N
            ``Tensor[L_i, 4]``, in input-image coordinates, of any floating dtype
            (float32 boxes with bfloat16 features keep their precision; the box
            gradient comes back in the boxes' dtype).
        output_size: ``PH`` and ``PW`` as an int or a pair, each at most 65536.
        spatial_scale: feature-map pixels per image pixel (e.g. 1/16).
        sampling_ratio: samples per bin along each axis, at most 1024; ``<= 0`` is
            adaptive, ``ceil(bin size)`` capped at 64 per axis so huge boxes cannot
            hang.
        aligned: shift boxes by -0.5 pixel (pixel centres at half-integers) and allow
            sub-pixel boxes; ``False`` clamps box size to at least 1.
        mode: ``"avg"`` (mean of a bin's samples) or ``"max"`` (largest sample; a
            NaN sample makes the bin NaN, as ``torch.amax``).
        sampling: ``"bilinear"`` or ``"nearest"`` interpolation of each sample.

    Returns:
        ``[K, C, PH, PW]`` in the dtype of ``input``. A box with a non-finite
        coordinate pools to zeros. The geometry (which pixels are read, with which
        weights) is computed in float64 whatever the dtypes.

    Gradients flow to ``input`` (any order) and, for bilinear sampling, to the box
    coordinates (first order). See ``docs/SEMANTICS.md`` for the exact math.
    """
    if not torch.jit.is_scripting():
        args = (input, boxes, output_size, spatial_scale, sampling_ratio, aligned, mode, sampling)
        node = _fx.node_if_traced(roi_align, args)
        if node is not None:  # torch.fx tracing: one node (roiops/_fx.py)
            return node
    rois, ph, pw, spatial_scale = v.op_args("roi_align", input, boxes, output_size, spatial_scale, mode)
    sampling_ratio = v.sampling_args("roi_align", sampling_ratio, sampling)
    aligned = bool(aligned)
    output, _ = torch.ops.roiops.roi_align(
        input, rois, spatial_scale, ph, pw, sampling_ratio, aligned, mode, sampling, v.needs_argmax([input, rois])
    )
    return output


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`; ``forward(input, boxes)``."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = False,
        mode: str = "avg",
        sampling: str = "bilinear",
    ):
        super().__init__()
        # Checked and normalised here, so that the attributes have TorchScript types.
        name = "RoIAlign"
        self.output_size = v.output_size_pair(name, output_size)
        self.spatial_scale = v.check_scale(name, spatial_scale)
        self.sampling_ratio = v.check_sampling_ratio(name, sampling_ratio)
        self.aligned = bool(aligned)
        self.mode = v.check_choice(name, "mode", mode, v.MODES)
        self.sampling = v.check_choice(name, "sampling", sampling, v.SAMPLINGS)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return roi_align(
            input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio,
            self.aligned, self.mode, self.sampling,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, "
            f"mode={self.mode!r}, sampling={self.sampling!r}"
        )
