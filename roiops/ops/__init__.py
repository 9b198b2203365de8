from .poolers import MultiScaleRoIAlign, MultiScaleRoIPooler, fpn_levels
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool
from .roi_warp import RoIWarp, roi_warp

__all__ = [
    "MultiScaleRoIAlign",
    "MultiScaleRoIPooler",
    "RoIAlign",
    "RoIPool",
    "RoIWarp",
    "fpn_levels",
    "roi_align",
    "roi_pool",
    "roi_warp",
]
