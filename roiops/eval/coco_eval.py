"""COCO box and mask AP of torchvision detection outputs, via pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval.stats order for the first six entries (maxDets=100).
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _as_int(value) -> int:
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)


def to_coco_results(results: Iterable[tuple[int, Mapping[str, torch.Tensor]]], label_to_category: Mapping[int, int],
                    iou_types: Sequence[str] = ("bbox", "segm")) -> dict[str, list[dict]]:
    """COCO result entries, per IoU type, of ``(image_id, output)`` pairs.

    ``output`` is a torchvision detection output: ``boxes`` [L, 4] (x1, y1, x2, y2),
    ``labels`` [L] (model labels, mapped to category ids by ``label_to_category``),
    ``scores`` [L] and, for ``"segm"``, ``masks`` [L, 1, H, W] (or [L, H, W]) of
    probabilities at image size, binarised at 0.5. Boxes become [x, y, w, h]; masks
    become RLE with str counts, so the entries can also be saved as json.
    """
    entries: dict[str, list[dict]] = {iou_type: [] for iou_type in iou_types}
    for image_id, output in results:
        image_id = _as_int(image_id)
        boxes = output["boxes"].detach().to("cpu", torch.float64)
        boxes[:, 2:] -= boxes[:, :2]
        boxes = boxes.tolist()
        categories = [label_to_category[label] for label in output["labels"].tolist()]
        scores = output["scores"].detach().to("cpu", torch.float64).tolist()
        if "bbox" in entries:
            entries["bbox"].extend({"image_id": image_id, "category_id": category, "bbox": box, "score": score}
                                   for box, category, score in zip(boxes, categories, scores, strict=True))
        if "segm" in entries:
            masks = output["masks"].detach()
            if masks.dim() == 4:
                masks = masks[:, 0]
            binary = (masks > 0.5).to("cpu", torch.uint8).numpy()
            # pycocotools wants [H, W, N] in Fortran order.
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
            for rle, category, score in zip(rles, categories, scores, strict=True):
                rle["counts"] = rle["counts"].decode("ascii")
                entries["segm"].append({"image_id": image_id, "category_id": category, "segmentation": rle,
                                        "score": score})
    return entries


def _load_results(coco_gt: COCO, entries: list[dict]) -> COCO:
    if entries:
        return coco_gt.loadRes(entries)
    # loadRes cannot take an empty list; an empty result set scores 0 wherever there is ground truth.
    coco_dt = COCO()
    coco_dt.dataset = {"images": copy.deepcopy(coco_gt.dataset["images"]),
                       "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": []}
    coco_dt.createIndex()
    return coco_dt


def coco_evaluate(coco_gt: COCO, results: Sequence[tuple[int, Mapping[str, torch.Tensor]]],
                  label_to_category: Mapping[int, int], iou_types: Sequence[str] = ("bbox", "segm"),
                  verbose: bool = False) -> dict[str, dict[str, float]]:
    """COCO AP of detection outputs against ``coco_gt``, in percent (0-100).

    ``results`` holds one ``(image_id, output)`` pair per evaluated image, ``output``
    being a torchvision Mask R-CNN eval output (see :func:`to_coco_results`); include
    images with no detections, since only the listed images are scored (an empty
    ``results`` scores every image in ``coco_gt``). ``label_to_category`` maps model
    labels to COCO category ids, e.g. ``CocoInstances.label_to_category``.

    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}``. No detections
    give 0; a metric with no ground truth to score (e.g. APl when no object is larger
    than 96x96 px) is NaN rather than COCOeval's -1. ``verbose`` lets COCOeval print
    its usual tables.
    """
    image_ids = sorted({_as_int(image_id) for image_id, _ in results}) or sorted(coco_gt.getImgIds())
    unknown = set(image_ids) - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"results name images not in the ground truth: {sorted(unknown)[:10]}")
    if "segm" in iou_types:
        # pycocotools compares RLEs of different sizes without complaint, and wrongly.
        for image_id, output in results:
            info = coco_gt.imgs[_as_int(image_id)]
            if len(output["masks"]) and tuple(output["masks"].shape[-2:]) != (info["height"], info["width"]):
                raise ValueError(f"masks for image {_as_int(image_id)} are {tuple(output['masks'].shape[-2:])}, "
                                 f"the image is {(info['height'], info['width'])}; paste them at image size")
    entries = to_coco_results(results, label_to_category, iou_types)

    metrics = {}
    for iou_type in iou_types:
        output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with output:  # COCOeval prints progress and tables unasked
            evaluator = COCOeval(coco_gt, _load_results(coco_gt, entries[iou_type]), iouType=iou_type)
            evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics[iou_type] = {name: float(value) * 100 if value >= 0 else float("nan")
                             for name, value in zip(METRIC_NAMES, evaluator.stats[:6], strict=True)}
    return metrics
