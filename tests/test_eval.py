"""roiops.eval.coco_evaluate on a small synthetic set: perfect, shifted and empty predictions."""

import math

import pytest
import torch

pytest.importorskip("numpy", reason="needs numpy: pip install roiops[models]")
pytest.importorskip("pycocotools", reason="needs pycocotools: pip install roiops[models]")
pytest.importorskip("PIL", reason="needs PIL: pip install roiops[models]")
pytest.importorskip("tqdm", reason="needs tqdm: pip install roiops[models]")

from roiops.data import CocoInstances, make_synthetic_coco  # noqa: E402
from roiops.eval import coco_evaluate, to_coco_results  # noqa: E402

# pycocotools' Cython decode trips a numpy 2 deprecation on every mask; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = make_synthetic_coco(tmp_path_factory.mktemp("synthetic"), "val", 10, seed=1, progress=False)
    return CocoInstances(folder)


def ground_truth_outputs(dataset):
    """The targets dressed as Mask R-CNN eval outputs: score 1, masks [L, 1, H, W] float."""
    results = []
    for i in range(len(dataset)):
        _, target = dataset[i]
        output = {"boxes": target["boxes"].clone(), "labels": target["labels"].clone(),
                  "scores": torch.ones(len(target["labels"])), "masks": target["masks"][:, None].float()}
        results.append((target["image_id"], output))
    return results


def test_ground_truth_scores_100(dataset):
    metrics = coco_evaluate(dataset.coco, ground_truth_outputs(dataset), dataset.label_to_category)
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert set(metrics[iou_type]) == set(METRICS)
        for name in ("AP", "AP50", "AP75"):
            assert metrics[iou_type][name] == pytest.approx(100)
        # Shapes are at most 60 px: no large objects, so APl has nothing to score.
        assert math.isnan(metrics[iou_type]["APl"])


def test_shifted_boxes_score_much_lower(dataset):
    results = ground_truth_outputs(dataset)
    for _, output in results:
        output["boxes"] += 25
    metrics = coco_evaluate(dataset.coco, results, dataset.label_to_category)
    assert metrics["bbox"]["AP"] < 20
    assert metrics["segm"]["AP"] == pytest.approx(100)  # masks were left in place


def test_wrong_label_mapping_scores_low(dataset):
    shifted = {label: category % 5 + 1 for label, category in dataset.label_to_category.items()}
    metrics = coco_evaluate(dataset.coco, ground_truth_outputs(dataset), shifted, iou_types=("bbox",))
    assert set(metrics) == {"bbox"} and metrics["bbox"]["AP"] < 5


def test_no_predictions_score_0(dataset):
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
             "masks": torch.zeros(0, 1, 128, 128)}
    for results in ([(image_id, empty) for image_id in dataset.image_ids], []):
        metrics = coco_evaluate(dataset.coco, results, dataset.label_to_category)
        for iou_type in ("bbox", "segm"):
            for name in ("AP", "AP50", "AP75"):
                assert metrics[iou_type][name] == 0


def test_result_entries_are_coco_format(dataset):
    results = ground_truth_outputs(dataset)[:1]
    entries = to_coco_results(results, dataset.label_to_category)
    (x1, y1, x2, y2), bbox = results[0][1]["boxes"][0].tolist(), entries["bbox"][0]["bbox"]
    assert bbox == [x1, y1, x2 - x1, y2 - y1]
    assert isinstance(entries["segm"][0]["segmentation"]["counts"], str)
    assert len(entries["bbox"]) == len(entries["segm"]) == len(results[0][1]["labels"])


def test_masks_of_the_wrong_size_are_refused(dataset):
    image_id, output = ground_truth_outputs(dataset)[0]
    output["masks"] = output["masks"][..., :64, :64]
    with pytest.raises(ValueError, match="image size"):
        coco_evaluate(dataset.coco, [(image_id, output)], dataset.label_to_category)
