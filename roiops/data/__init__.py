"""Datasets for the reference Mask R-CNN: a synthetic shapes set written in COCO format,
and a loader for any COCO-format instance folder.

Needs the optional ``models`` extra (numpy, Pillow, pycocotools, tqdm); ``import roiops``
alone does not import this package.
"""

from .coco import CocoInstances, collate_fn
from .synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticImage,
    make_synthetic_coco,
    render_synthetic_image,
    synthetic_dataset,
)

__all__ = [
    "SYNTHETIC_CLASSES",
    "CocoInstances",
    "SyntheticImage",
    "collate_fn",
    "make_synthetic_coco",
    "render_synthetic_image",
    "synthetic_dataset",
]
