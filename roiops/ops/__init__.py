from .poolers import MultiScaleRoIAlign, MultiScaleRoIPooler, fpn_levels
from .prroi_pool import PrRoIPool, prroi_pool
from .ps_roi import PSRoIAlign, PSRoIPool, ps_roi_align, ps_roi_pool
from .roi_align import RoIAlign, roi_align
from .roi_align_rotated import RoIAlignRotated, roi_align_rotated
from .roi_pool import RoIPool, roi_pool
from .roi_warp import RoIWarp, roi_warp

__all__ = [
    "MultiScaleRoIAlign",
    "MultiScaleRoIPooler",
    "PrRoIPool",
    "PSRoIAlign",
    "PSRoIPool",
    "RoIAlign",
    "RoIAlignRotated",
    "RoIPool",
    "RoIWarp",
    "fpn_levels",
    "prroi_pool",
    "ps_roi_align",
    "ps_roi_pool",
    "roi_align",
    "roi_align_rotated",
    "roi_pool",
    "roi_warp",
]
