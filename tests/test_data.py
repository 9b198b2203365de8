"""roiops.data: the synthetic COCO generator (determinism, cache, content) and the COCO loader."""

import json
import os

import pytest
import torch

np = pytest.importorskip("numpy", reason="needs numpy: pip install roiops[models]")
pytest.importorskip("pycocotools", reason="needs pycocotools: pip install roiops[models]")
pytest.importorskip("PIL", reason="needs PIL: pip install roiops[models]")
pytest.importorskip("tqdm", reason="needs tqdm: pip install roiops[models]")

import pycocotools.mask as mask_utils  # noqa: E402
from PIL import Image  # noqa: E402

from roiops.data import (  # noqa: E402
    SYNTHETIC_CLASSES,
    CocoInstances,
    collate_fn,
    make_synthetic_coco,
    render_synthetic_image,
)
from roiops.data import synthetic as synthetic_module  # noqa: E402

# pycocotools' Cython decode trips a numpy 2 deprecation on every mask; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

SEED = 3
NUM_IMAGES = 12


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("synthetic"), "train", NUM_IMAGES, SEED, progress=False)


def folder_files(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_same_seed_gives_identical_files(tmp_path, small_set):
    again = make_synthetic_coco(tmp_path, "train", NUM_IMAGES, SEED, progress=False)
    assert again != small_set
    assert folder_files(again) == folder_files(small_set)
    assert len(list((again / "images").glob("*.png"))) == NUM_IMAGES


def test_different_seed_or_split_differs(tmp_path, small_set):
    for seed, split in [(SEED + 1, "train"), (SEED, "val")]:
        other = make_synthetic_coco(tmp_path, split, 2, seed, progress=False)
        assert (other / "images" / "000001.png").read_bytes() != (small_set / "images" / "000001.png").read_bytes()


def test_one_image_renders_alone_as_in_the_full_set(small_set):
    index = 7
    rendered = render_synthetic_image(SEED, "train", index)
    with Image.open(small_set / "images" / f"{index + 1:06d}.png") as png:
        assert np.array_equal(np.array(png), rendered.image)
    coco = json.loads((small_set / "annotations.json").read_text())
    anns = [ann for ann in coco["annotations"] if ann["image_id"] == index + 1]
    assert [ann["category_id"] for ann in anns] == rendered.category_ids
    for ann, mask in zip(anns, rendered.masks, strict=True):
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)


def test_cache_reuses_a_complete_set(small_set):
    before = {path: path.stat().st_mtime_ns for path in small_set.rglob("*")}
    assert make_synthetic_coco(small_set.parent, "train", NUM_IMAGES, SEED, progress=False) == small_set
    assert {path: path.stat().st_mtime_ns for path in small_set.rglob("*")} == before


def test_cache_regenerates_on_other_parameters_or_incomplete_set(tmp_path):
    folder = make_synthetic_coco(tmp_path, "val", 3, SEED, progress=False)
    folder = make_synthetic_coco(tmp_path, "val", 4, SEED, progress=False)
    assert json.loads((folder / "generator.json").read_text())["num_images"] == 4
    assert len(list((folder / "images").glob("*.png"))) == 4

    (folder / "images" / "000002.png").unlink()  # e.g. a user deleted a file
    make_synthetic_coco(tmp_path, "val", 4, SEED, progress=False)
    assert (folder / "images" / "000002.png").is_file()
    assert sorted(os.listdir(tmp_path)) == ["val"]  # no staging or stale folders left


def test_interrupted_generation_leaves_no_set(tmp_path, monkeypatch):
    render = synthetic_module.render_synthetic_image

    def failing_render(seed, split, index, image_size):
        if index == 2:
            raise KeyboardInterrupt
        return render(seed, split, index, image_size)

    monkeypatch.setattr(synthetic_module, "render_synthetic_image", failing_render)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_coco(tmp_path, "train", 5, SEED, progress=False)
    assert os.listdir(tmp_path) == []


def test_content_statistics():
    seen = set()
    for index in range(50):
        rendered = render_synthetic_image(0, "stats", index)
        assert rendered.image.shape == (128, 128, 3) and rendered.image.dtype == np.uint8
        assert 2 <= rendered.num_placed <= 6
        # The front object is never occluded, so at least one survives.
        assert 1 <= len(rendered.category_ids) <= rendered.num_placed
        assert rendered.masks.shape == (len(rendered.category_ids), 128, 128)
        assert rendered.masks.sum(axis=(1, 2)).min() >= 20
        assert rendered.masks.sum(axis=0).max() <= 1  # visible parts never overlap
        seen.update(rendered.category_ids)
    assert seen == set(range(1, len(SYNTHETIC_CLASSES) + 1))


def test_annotations_are_consistent(small_set):
    coco = json.loads((small_set / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == list(SYNTHETIC_CLASSES)
    assert [img["id"] for img in coco["images"]] == list(range(1, NUM_IMAGES + 1))
    assert len({ann["id"] for ann in coco["annotations"]}) == len(coco["annotations"])
    assert min(ann["id"] for ann in coco["annotations"]) >= 1
    for ann in coco["annotations"]:
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        tight = [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
        assert ann["bbox"] == [float(v) for v in tight]
        assert ann["bbox"] == mask_utils.toBbox(ann["segmentation"]).tolist()
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0


def test_loader_on_generated_set(small_set):
    dataset = CocoInstances(small_set)
    assert len(dataset) == NUM_IMAGES
    assert dataset.label_to_category == {i: i for i in range(1, 6)}
    assert dataset.category_names == SYNTHETIC_CLASSES
    images, targets = collate_fn([dataset[0], dataset[1]])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    for image, target in zip(images, targets, strict=True):
        assert image.shape == (3, 128, 128) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        n = len(target["labels"])
        assert n >= 1
        assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and 1 <= target["labels"].min() and target["labels"].max() <= 5
        assert target["masks"].shape == (n, 128, 128) and target["masks"].dtype == torch.uint8
        assert target["image_id"].dtype == torch.int64 and target["image_id"].dim() == 0
        # Every mask lies inside its box, which is tight (x2/y2 are exclusive pixel edges).
        for box, mask in zip(target["boxes"], target["masks"], strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def write_tiny_coco(root):
    """Two hand-made images: a grayscale one with a polygon, an RLE, a crowd and a degenerate
    annotation, and an RGBA one with none; category ids are unsorted and not contiguous."""
    (root / "pictures").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.full((20, 30), 128, np.uint8), mode="L").save(root / "pictures" / "a.png")
    Image.fromarray(np.full((16, 16, 4), 200, np.uint8), mode="RGBA").save(root / "pictures" / "b.png")
    rle_mask = np.zeros((20, 30), np.uint8)
    rle_mask[2:6, 20:27] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode("ascii")
    coco = {
        "images": [{"id": 42, "file_name": "a.png", "width": 30, "height": 20},
                   {"id": 9, "file_name": "b.png", "width": 16, "height": 16}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 7, "iscrowd": 0, "area": 50.0, "bbox": [4, 8, 10, 5],
             "segmentation": [[4, 8, 14, 8, 14, 13, 4, 13]]},
            {"id": 2, "image_id": 42, "category_id": 3, "iscrowd": 0, "area": 28.0, "bbox": [20, 2, 7, 4],
             "segmentation": rle},
            {"id": 3, "image_id": 42, "category_id": 3, "iscrowd": 1, "area": 28.0, "bbox": [0, 0, 7, 4],
             "segmentation": rle},
            {"id": 4, "image_id": 42, "category_id": 7, "iscrowd": 0, "area": 0.0, "bbox": [1, 1, 0.5, 3],
             "segmentation": [[1, 1, 1.5, 1, 1.5, 4, 1, 4]]},
        ],
    }
    (root / "annotations" / "instances.json").write_text(json.dumps(coco))
    return rle_mask


def test_loader_on_hand_written_coco(tmp_path):
    rle_mask = write_tiny_coco(tmp_path)
    dataset = CocoInstances(annotation_file=tmp_path / "annotations" / "instances.json",
                            image_dir=tmp_path / "pictures")
    assert dataset.image_ids == [9, 42]
    assert dataset.label_to_category == {1: 3, 2: 7}
    assert dataset.category_names == ("three", "seven")

    image, target = dataset[1]  # id 42, grayscale
    assert image.shape == (3, 20, 30) and torch.allclose(image, torch.full_like(image, 128 / 255))
    assert target["image_id"].item() == 42
    assert target["labels"].tolist() == [2, 1]  # crowd and degenerate annotations left out
    assert target["boxes"].tolist() == [[4, 8, 14, 13], [20, 2, 27, 6]]
    polygon = target["masks"][0]
    ys, xs = torch.nonzero(polygon, as_tuple=True)
    assert 4 <= xs.min() and xs.max() < 14 and 8 <= ys.min() and ys.max() < 13
    assert abs(polygon.sum().item() - 50) <= 10
    assert torch.equal(target["masks"][1], torch.from_numpy(rle_mask))

    image, target = dataset[0]  # id 9, RGBA, no annotations
    assert image.shape == (3, 16, 16)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 16, 16) and target["masks"].dtype == torch.uint8


def test_loader_needs_a_folder_or_both_paths(tmp_path):
    with pytest.raises(ValueError):
        CocoInstances(annotation_file=tmp_path / "instances.json")
