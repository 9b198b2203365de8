"""COCO evaluation of torchvision detection outputs (box and mask AP via pycocotools).

Needs the optional ``models`` extra (numpy, pycocotools); ``import roiops`` alone does
not import this package.
"""

from .coco_eval import METRIC_NAMES, coco_evaluate, to_coco_results

__all__ = ["METRIC_NAMES", "coco_evaluate", "to_coco_results"]
