"""Random detection-like RoIs, shared by the self-check and the benchmarks."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def random_rois(
    count: int,
    batch: int,
    image_size: tuple[float, float],
    *,
    min_size: float = 8.0,
    max_fraction: float = 0.8,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``[count, 5]`` boxes ``(batch_index, x1, y1, x2, y2)`` inside an image of
    ``image_size = (height, width)`` pixels, with sides log-uniform between
    ``min_size`` and ``max_fraction`` of the shorter image side (as RPN proposals are)."""
    ih, iw = image_size
    hi = max(min_size, max_fraction * min(ih, iw))
    u = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    wh = torch.exp(math.log(min_size) + u * (math.log(hi) - math.log(min_size)))
    xy = torch.rand(count, 2, generator=generator, dtype=torch.float64) * (
        torch.tensor([iw, ih], dtype=torch.float64) - wh
    ).clamp(min=0)
    idx = torch.randint(0, batch, (count, 1), generator=generator).to(torch.float64)
    return torch.cat([idx, xy, xy + wh], dim=1).to(dtype)
