"""A deterministic synthetic instance-segmentation set in COCO format.

Five shape classes (disc, ring, triangle, thin bar, ellipse with a hole) of 12-60 px
are painted over a smooth noisy background; later shapes occlude earlier ones and the
ground-truth masks are the visible parts. The set is small and quick to train on, yet
mask quality depends on the RoI feature alignment (thin bars, ring and hole
boundaries), which is what the RoIPool/RoIWarp/RoIAlign ablation measures.

Every image is rendered from its own seed, derived from ``(seed, split, index)``, so
the set does not depend on the order, process or thread that renders it, and any one
image can be re-rendered alone with :func:`render_synthetic_image`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image
from tqdm import tqdm

SYNTHETIC_CLASSES = ("disc", "ring", "triangle", "bar", "holed_ellipse")

# Bump whenever the rendered content changes, so cached sets made by an older
# generator are regenerated instead of silently reused.
GENERATOR_VERSION = 1

# Content parameters, in pixels of a 128 px image; sizes scale with image_size.
_REFERENCE_SIZE = 128
_MIN_OBJECTS, _MAX_OBJECTS = 2, 6
_MIN_SIZE, _MAX_SIZE = 12.0, 60.0
# An occluded object whose visible part is this small is no longer a fair target.
_MIN_VISIBLE_PIXELS = 20
_MIN_VISIBLE_FRACTION = 0.15
_BACKGROUND_CELLS = 5  # low-frequency background: a 5x5 grid of colours, interpolated
_PIXEL_NOISE_STD = 8.0
_MIN_COLOUR_DISTANCE = 80.0  # keeps shapes visible against the background under them


@dataclass
class SyntheticImage:
    """One rendered image and its instances.

    ``image`` is uint8 [H, W, 3]; ``masks`` is bool [N, H, W], the visible part of each
    kept object in paint order (back to front); ``category_ids`` are the COCO category
    ids (1-based indices into :data:`SYNTHETIC_CLASSES`) of those objects;
    ``num_placed`` counts the objects painted before occluded ones were dropped.
    """

    image: np.ndarray
    masks: np.ndarray
    category_ids: list[int]
    num_placed: int


def _image_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    # hash() is salted per process; a digest of the split name is stable everywhere.
    split_key = int.from_bytes(hashlib.sha256(split.encode("utf-8")).digest()[:8], "little")
    return np.random.SeedSequence([seed, split_key, index])


@functools.lru_cache(maxsize=8)
def _interpolation(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Left cell index and weight of the right cell for linear interpolation at each pixel centre."""
    pos = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
    low = np.minimum(np.floor(pos).astype(np.int64), cells - 2)
    return low, pos - low


def _upsample(cells: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly upsample [cells, cells, C] to [size, size, C].

    Element-wise on purpose: a BLAS product could round differently with the thread count.
    """
    low, frac = _interpolation(size, cells.shape[0])
    rows = cells[low] * (1 - frac)[:, None, None] + cells[low + 1] * frac[:, None, None]
    return rows[:, low] * (1 - frac)[None, :, None] + rows[:, low + 1] * frac[None, :, None]


def _shape_mask(category: int, cx: float, cy: float, size: float, angle: float,
                xs: np.ndarray, ys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one shape whose extent is ``size`` px, centred at (cx, cy).

    ``xs``/``ys`` are the pixel-centre coordinates; every shape fits in a circle of
    radius size / 2, so a centre at least that far from the border keeps it whole.
    """
    dx, dy = xs - cx, ys - cy
    # Coordinates along and across the shape's rotated axis.
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    radius = size / 2
    name = SYNTHETIC_CLASSES[category - 1]
    if name == "disc":
        return dx * dx + dy * dy <= radius * radius
    if name == "ring":
        inner = radius * rng.uniform(0.45, 0.7)
        d2 = dx * dx + dy * dy
        return (d2 <= radius * radius) & (d2 > inner * inner)
    if name == "triangle":
        # Equilateral, circumradius = radius; inside = on the same side of all three edges.
        corners = [(radius * math.cos(angle + k * 2 * math.pi / 3), radius * math.sin(angle + k * 2 * math.pi / 3))
                   for k in range(3)]
        sides = []
        for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
            sides.append((bx - ax) * (dy - ay) - (by - ay) * (dx - ax))
        return ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | (
            (sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0))
    if name == "bar":
        # At least 3 px wide so the thinnest bars still survive rasterisation at any angle.
        half_width = max(1.5, size * rng.uniform(0.06, 0.1))
        return (np.abs(u) <= radius) & (np.abs(v) <= half_width)
    if name == "holed_ellipse":
        minor = radius * rng.uniform(0.5, 0.75)
        hole = minor * rng.uniform(0.35, 0.6)
        inside = (u / radius) ** 2 + (v / minor) ** 2 <= 1
        return inside & (dx * dx + dy * dy > hole * hole)
    raise AssertionError(f"unknown class {name}")


def render_synthetic_image(seed: int, split: str, index: int, image_size: int = 128) -> SyntheticImage:
    """Render image ``index`` of ``split`` exactly as :func:`make_synthetic_coco` writes it."""
    rng = np.random.default_rng(_image_seed(seed, split, index))
    scale = image_size / _REFERENCE_SIZE

    # Background: a random base colour with smooth colour variation across the image.
    cells = rng.normal(0.0, 35.0, (_BACKGROUND_CELLS, _BACKGROUND_CELLS, 3)) + rng.uniform(50, 200, 3)
    canvas = _upsample(cells, image_size)

    coords = np.arange(image_size, dtype=np.float64) + 0.5
    xs, ys = coords[None, :], coords[:, None]

    num_placed = int(rng.integers(_MIN_OBJECTS, _MAX_OBJECTS + 1))
    full_masks, visible_masks, categories = [], [], []
    for _ in range(num_placed):
        category = int(rng.integers(1, len(SYNTHETIC_CLASSES) + 1))
        size = math.exp(rng.uniform(math.log(_MIN_SIZE), math.log(_MAX_SIZE))) * scale
        radius = size / 2
        cx = rng.uniform(radius, image_size - radius)
        cy = rng.uniform(radius, image_size - radius)
        angle = rng.uniform(0, 2 * math.pi)
        mask = _shape_mask(category, cx, cy, size, angle, xs, ys, rng)

        # Redraw colours too close to what lies under the shape's centre, so shapes stay
        # visible; a few tries at most, as a rare hard background need not be perfect.
        under = canvas[int(cy), int(cx)]
        for _attempt in range(10):
            colour = rng.uniform(0, 255, 3)
            if np.linalg.norm(colour - under) >= _MIN_COLOUR_DISTANCE:
                break
        canvas[mask] = colour

        # The new shape hides whatever it covers.
        for visible in visible_masks:
            visible &= ~mask
        full_masks.append(mask)
        visible_masks.append(mask.copy())
        categories.append(category)

    keep = [i for i in range(num_placed)
            if visible_masks[i].sum() >= max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * full_masks[i].sum())]

    canvas += rng.normal(0.0, _PIXEL_NOISE_STD, canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = np.stack([visible_masks[i] for i in keep]) if keep else np.zeros((0, image_size, image_size), bool)
    return SyntheticImage(image=image, masks=masks, category_ids=[categories[i] for i in keep],
                          num_placed=num_placed)


def mask_to_annotation(mask: np.ndarray) -> dict:
    """COCO fields (``bbox`` [x, y, w, h] tight around the pixels, ``area``, RLE
    ``segmentation``) of one boolean [H, W] mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # bytes -> str so json can hold it
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    bbox = [float(x0), float(y0), float(cols[-1] + 1 - x0), float(rows[-1] + 1 - y0)]
    return {"bbox": bbox, "area": float(mask.sum()), "segmentation": rle}


def _parameters(seed: int, split: str, num_images: int, image_size: int) -> dict:
    return {"generator": "roiops.data.synthetic", "version": GENERATOR_VERSION, "seed": seed, "split": split,
            "num_images": num_images, "image_size": image_size}


def _is_complete(folder: Path, parameters: dict) -> bool:
    try:
        with open(folder / "generator.json") as f:
            if json.load(f) != parameters:
                return False
        images = sum(1 for entry in os.scandir(folder / "images") if entry.name.endswith(".png"))
    except (OSError, ValueError):
        return False
    return images == parameters["num_images"] and (folder / "annotations.json").is_file()


def _write_set(folder: Path, seed: int, split: str, num_images: int, image_size: int, progress: bool) -> None:
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f"synthetic {split}", disable=not progress, leave=False):
        image_id = index + 1  # COCO ids are positive; COCOeval treats id 0 as "unmatched"
        rendered = render_synthetic_image(seed, split, index, image_size)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(rendered.image).save(folder / "images" / file_name, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for mask, category in zip(rendered.masks, rendered.category_ids, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "iscrowd": 0, **mask_to_annotation(mask)})
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SYNTHETIC_CLASSES)]
    coco = {"info": {"description": f"roiops synthetic shapes, split {split}, seed {seed}"},
            "images": images, "annotations": annotations, "categories": categories}
    with open(folder / "annotations.json", "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    # Written last: its presence (with the image count) marks the set complete.
    with open(folder / "generator.json", "w") as f:
        json.dump(_parameters(seed, split, num_images, image_size), f, indent=1)


def make_synthetic_coco(root: str | os.PathLike, split: str, num_images: int, seed: int, image_size: int = 128,
                        progress: bool = True) -> Path:
    """Write ``num_images`` synthetic images as the COCO folder ``root/<split>/`` and return it.

    The folder holds ``images/<id:06d>.png`` (ids 1..num_images), ``annotations.json``
    (RLE masks, category ids 1..5 in :data:`SYNTHETIC_CLASSES` order) and
    ``generator.json`` (the parameters). A folder already made with the same
    parameters is reused as is; otherwise the set is built in a temporary folder and
    renamed into place (replacing whatever ``root/<split>/`` held), so an interrupted
    run never leaves a set that looks complete. The same parameters always give
    byte-identical files. ``progress`` shows a tqdm bar.
    """
    if not split or os.sep in split or split.startswith("."):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    root = Path(root)
    folder = root / split
    parameters = _parameters(seed, split, num_images, image_size)
    if _is_complete(folder, parameters):
        return folder

    root.mkdir(parents=True, exist_ok=True)
    # Same file system as the target, so the final rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{split}-tmp-", dir=root))
    try:
        _write_set(staging / split, seed, split, num_images, image_size, progress)
        if folder.exists():  # an older or incomplete set: move it out of the way first
            os.rename(folder, staging / "stale")
        try:
            os.rename(staging / split, folder)
        except OSError:
            # Another process finished the same set first; theirs is as good as ours.
            if not _is_complete(folder, parameters):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def synthetic_dataset(root: str | os.PathLike, seed: int = 0, train_images: int = 8000, val_images: int = 400,
                      image_size: int = 128, progress: bool = True) -> tuple[Path, Path]:
    """Make (or reuse) the ``train`` and ``val`` splits under ``root``; return their folders.

    The splits are rendered from different per-image seeds, so they share no images.
    """
    train = make_synthetic_coco(root, "train", train_images, seed, image_size, progress)
    val = make_synthetic_coco(root, "val", val_images, seed, image_size, progress)
    return train, val
