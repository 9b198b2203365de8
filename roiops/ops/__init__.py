from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool
from .roi_warp import RoIWarp, roi_warp

__all__ = ["RoIAlign", "RoIPool", "RoIWarp", "roi_align", "roi_pool", "roi_warp"]
