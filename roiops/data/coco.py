"""A COCO-format instance-segmentation dataset for torchvision detection models."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO


class CocoInstances(torch.utils.data.Dataset):
    """Images and instance targets of a COCO-format folder, as torchvision's Mask R-CNN wants them.

    ``CocoInstances(folder)`` reads ``folder/annotations.json`` and ``folder/images/``
    (the layout :func:`roiops.data.make_synthetic_coco` writes). For other layouts, such
    as COCO itself, pass ``annotation_file=`` and ``image_dir=`` (for example
    ``annotations/instances_val2017.json`` and ``val2017/``).

    Item ``i`` is ``(image, target)``: ``image`` is float32 [3, H, W] in [0, 1] (any
    PIL mode converted to RGB); ``target`` has ``boxes`` float32 [L, 4] (x1, y1, x2, y2),
    ``labels`` int64 [L] in 1..K, ``masks`` uint8 [L, H, W] and ``image_id`` int64 (the
    COCO image id). Crowd annotations and boxes under 1 px wide or high are left out;
    images without instances give L = 0.

    Labels are the category ids in sorted order renumbered 1..K (0 is torchvision's
    background): ``label_to_category[label]`` gives the COCO category id back and
    ``category_names[label - 1]`` its name. ``category_names`` holds the K object
    classes only, so torchvision's ``num_classes`` (which counts the background) is
    ``len(category_names) + 1``.

    Attributes: ``coco`` (the pycocotools COCO object), ``image_ids`` (sorted COCO
    image ids, item ``i`` is ``image_ids[i]``), ``label_to_category``,
    ``category_to_label``, ``category_names``, ``image_dir``.
    """

    def __init__(self, folder: str | os.PathLike | None = None, *, annotation_file: str | os.PathLike | None = None,
                 image_dir: str | os.PathLike | None = None):
        if folder is not None:
            annotation_file = annotation_file if annotation_file is not None else Path(folder) / "annotations.json"
            image_dir = image_dir if image_dir is not None else Path(folder) / "images"
        elif annotation_file is None or image_dir is None:
            raise ValueError("give a folder, or both annotation_file= and image_dir=")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco = COCO(str(annotation_file))
        self.image_dir = Path(image_dir)
        self.image_ids = sorted(self.coco.getImgIds())
        category_ids = sorted(self.coco.getCatIds())
        self.label_to_category = {label: cat for label, cat in enumerate(category_ids, start=1)}
        self.category_to_label = {cat: label for label, cat in self.label_to_category.items()}
        self.category_names = tuple(self.coco.cats[cat]["name"] for cat in category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        with Image.open(self.image_dir / info["file_name"]) as pil:
            pixels = np.array(pil.convert("RGB"))  # a writable copy, as torch.from_numpy wants
        height, width = pixels.shape[:2]
        # Masks are drawn at the size the annotations claim; a mismatch would misplace them.
        if (height, width) != (info["height"], info["width"]):
            raise ValueError(f"image {image_id} ({info['file_name']}) is {width}x{height} but the annotations "
                             f"say {info['width']}x{info['height']}")
        # In numpy: small torch ops pay the intra-op thread pool's wake-up, which here cost more than the work.
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / np.float32(255))

        boxes, labels, masks = [], [], []
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id)):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.category_to_label[ann["category_id"]])
            masks.append(self.coco.annToMask(ann))  # polygons and RLE alike

        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": (torch.from_numpy(np.stack(masks)) if masks
                      else torch.zeros((0, height, width), dtype=torch.uint8)),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
        }
        return image, target


def collate_fn(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch ``(image, target)`` items as ``(images, targets)`` lists, as torchvision detection models take them
    (images differ in size, so they are not stacked)."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
