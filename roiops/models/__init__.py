"""The reference Mask R-CNN (torchvision's, with roiops' RoI layers) and its training.

Needs the ``models`` extra: ``pip install .[models]`` (torchvision, pycocotools,
matplotlib, tqdm).
"""

from .mask_rcnn import ROI_LAYERS, RoILayer, mask_rcnn, roi_layer

__all__ = ["ROI_LAYERS", "RoILayer", "mask_rcnn", "roi_layer"]
