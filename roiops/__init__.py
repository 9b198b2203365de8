"""roiops: RoIPool, RoIWarp and RoIAlign for PyTorch.

Each op has max/avg aggregation and (for the sampled ops) bilinear/nearest sampling,
input gradients of any order, box gradients for roi_align, float16/bfloat16/float32/
float64 and channels_last, and works under torch.compile and torch.export.
MultiScaleRoIPooler pools RoIs from an FPN pyramid in one fused op call;
MultiScaleRoIAlign is the same as a drop-in for torchvision.ops.MultiScaleRoIAlign.
"""

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)

from . import (
    _C,  # noqa: F401  (loads the library that registers torch.ops.roiops)
    _registration,  # noqa: F401  (fake kernels and autograd)
    ops,
)
from .ops import (  # noqa: F401  (the public API, listed in ops.__all__)
    MultiScaleRoIAlign,
    MultiScaleRoIPooler,
    RoIAlign,
    RoIPool,
    RoIWarp,
    fpn_levels,
    roi_align,
    roi_pool,
    roi_warp,
)

__version__ = "0.1.0"

__all__ = list(ops.__all__)
