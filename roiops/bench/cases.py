"""What the benchmark runs: single-map cases from typical detection workloads and edge
cases, the FPN multilevel case, the scaling sweeps, and the inputs of each."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..testing import random_rois


@dataclasses.dataclass(frozen=True)
class Case:
    """One op on one feature map: ``rois`` boxes of kind ``boxes`` pooled to ``size`` x
    ``size`` from a ``[batch, channels, height, width]`` map at ``scale``."""

    name: str
    # "roi_align" (avg, bilinear), "roi_pool" (max), "ps_roi_align", "ps_roi_pool": the
    # ops torchvision has too; or "prroi_pool" and "roi_align_rotated", which torchvision
    # lacks (their baselines are pure-PyTorch formulations).
    op: str
    batch: int
    channels: int
    height: int
    width: int
    scale: float
    rois: int
    size: int
    sampling_ratio: int = 0
    aligned: bool = False
    # "random": RPN-like proposals (roiops.testing.random_rois). The edge kinds: "tiny"
    # (under a feature pixel), "off-map" (partly or wholly outside the image), "wide"
    # (several image widths), "one-pixel" (a 1x1 map); an edge case with rois=0 is K=0.
    boxes: str = "random"

    @property
    def edge(self) -> bool:
        """Edge cases run for coverage; their times are mostly call overhead, so the
        speed targets do not judge them."""
        return self.name.startswith("edge-")

    @property
    def image_size(self) -> tuple[float, float]:
        return self.height / self.scale, self.width / self.scale

    @property
    def output_channels(self) -> int:
        """C, or C / size^2 for the position-sensitive ops (an input channel per bin)."""
        return self.channels // self.size**2 if self.op.startswith("ps_") else self.channels

    def quick(self) -> Case:
        """The same shape with an eighth of the channels (a multiple of size^2 for the
        position-sensitive ops) and RoIs, for ``--quick``."""
        unit = self.size**2 if self.op.startswith("ps_") else 1
        channels = max(16, self.channels // 8) // unit * unit or unit
        return dataclasses.replace(self, channels=channels, rois=self.rois and max(8, self.rois // 8))


# Detection workloads as single-map problems, scaled to a 2-core CPU where the shape allows
# (fewer RoIs, same shapes): c4-box 128 of a C4 head's 512 RoIs, roipool-vgg 500 of Fast
# R-CNN's 2000. box-50x84, roipool-p2 and roipool-50x84 are plain RoIAlign / RoIPool
# baselines on a stride-16 and a stride-4 map; prroi-50x84 is box-50x84's problem for
# Precise RoI Pooling and rotated-50x84 for rotated RoIAlign (the same boxes turned by
# random angles). rfcn-* are R-FCN's heads on VOC (21 classes): the 7 x 7 x 21
# position-sensitive score map of a 600 x 1000 image at stride 16, its 300 proposals.
CASES = (
    Case("c4-box", "roi_align", 1, 1024, 50, 84, 1 / 16, 128, 14, 0, False),
    Case("fpn-box-train-p2", "roi_align", 2, 256, 200, 336, 1 / 4, 1024, 7, 2, True),
    Case("fpn-mask-train-p3", "roi_align", 2, 256, 100, 168, 1 / 8, 256, 14, 2, True),
    Case("infer-box", "roi_align", 1, 256, 50, 84, 1 / 16, 1000, 7, 2, True),
    Case("infer-mask", "roi_align", 1, 256, 50, 84, 1 / 16, 100, 14, 2, True),
    Case("box-50x84", "roi_align", 1, 256, 50, 84, 1 / 16, 1024, 7, 2, True),
    Case("roipool-vgg", "roi_pool", 1, 512, 38, 63, 1 / 16, 500, 7),
    Case("roipool-p2", "roi_pool", 2, 256, 200, 336, 1 / 4, 1024, 7),
    Case("roipool-50x84", "roi_pool", 1, 256, 50, 84, 1 / 16, 1024, 7),
    Case("prroi-50x84", "prroi_pool", 1, 256, 50, 84, 1 / 16, 1024, 7),
    Case("rotated-50x84", "roi_align_rotated", 1, 256, 50, 84, 1 / 16, 1024, 7, 2, True),
    Case("rfcn-ps-align", "ps_roi_align", 1, 7 * 7 * 21, 38, 63, 1 / 16, 300, 7, 2, True),
    Case("rfcn-ps-pool", "ps_roi_pool", 1, 7 * 7 * 21, 38, 63, 1 / 16, 300, 7),
    Case("edge-tiny", "roi_align", 1, 256, 50, 84, 1 / 16, 1000, 7, 2, True, boxes="tiny"),
    Case("edge-off-map", "roi_align", 1, 256, 50, 84, 1 / 16, 1000, 7, 2, True, boxes="off-map"),
    Case("edge-wide", "roi_align", 1, 256, 50, 84, 1 / 16, 100, 7, 2, True, boxes="wide"),
    Case("edge-one-pixel", "roi_align", 4, 256, 1, 1, 1 / 16, 1000, 7, 2, True, boxes="one-pixel"),
    Case("edge-empty", "roi_align", 1, 256, 50, 84, 1 / 16, 0, 7, 2, True),
    Case("edge-roipool-tiny", "roi_pool", 1, 256, 50, 84, 1 / 16, 1000, 7, boxes="tiny"),
)

# The case the copy-bandwidth target and the scaling sweeps use.
BANDWIDTH_CASE = "box-50x84"
# Thread scaling runs on these (a small and a large map).
THREAD_CASES = ("box-50x84", "fpn-box-train-p2")
SWEEP_ROIS = (64, 128, 256, 512, 1024, 2048)
SWEEP_CHANNELS = (64, 128, 256, 512, 1024)
QUICK_SWEEP_ROIS = (8, 32, 128)
QUICK_SWEEP_CHANNELS = (16, 32, 64)


@dataclasses.dataclass(frozen=True)
class Pyramid:
    """FPN levels P2-P5 of a batch of images, roi_align 7x7 sr 2 with torchvision's
    ``aligned=False`` so torchvision's MultiScaleRoIAlign computes the same."""

    batch: int = 2
    image: tuple[int, int] = (800, 1344)
    channels: int = 256
    rois: int = 1024
    size: int = 7
    sampling_ratio: int = 2
    scales: tuple[float, ...] = (1 / 4, 1 / 8, 1 / 16, 1 / 32)

    def quick(self) -> Pyramid:
        return dataclasses.replace(self, image=(400, 672), channels=32, rois=128)

    @property
    def name(self) -> str:
        return f"fpn-p2-p5-{self.batch}x{self.image[0]}x{self.image[1]}"

    def shapes(self) -> list[tuple[int, int, int, int]]:
        return [(self.batch, self.channels, int(self.image[0] * s), int(self.image[1] * s)) for s in self.scales]


def turned(rois: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Corner boxes as roi_align_rotated's rows (batch, cx, cy, w, h, angle), turned by
    random angles in [-180, 180) degrees."""
    r = rois.double()
    angle = torch.rand(r.shape[0], 1, generator=gen, dtype=torch.float64) * 360 - 180
    return torch.cat([r[:, :1], (r[:, 1:3] + r[:, 3:5]) / 2, r[:, 3:5] - r[:, 1:3], angle], 1).to(rois.dtype)


def corners(rois: torch.Tensor) -> torch.Tensor:
    """The axis-aligned ``[K, 5]`` boxes enclosing roi_align_rotated's turned ones; other
    boxes as they are."""
    if rois.shape[1] == 5:
        return rois
    r = rois.double()
    t = torch.deg2rad(r[:, 5])
    half = torch.stack([(r[:, 3] * t.cos()).abs() + (r[:, 4] * t.sin()).abs(),
                        (r[:, 3] * t.sin()).abs() + (r[:, 4] * t.cos()).abs()], 1) / 2
    return torch.cat([r[:, :1], r[:, 1:3] - half, r[:, 1:3] + half], 1)


def _boxes(case: Case, gen: torch.Generator) -> torch.Tensor:
    k, ih, iw = case.rois, *case.image_size
    if case.op == "roi_align_rotated":
        return turned(random_rois(k, case.batch, (ih, iw), min_size=16, generator=gen), gen)
    if case.boxes == "random":
        return random_rois(k, case.batch, (ih, iw), min_size=16, generator=gen)
    if case.boxes == "one-pixel":
        return random_rois(k, case.batch, (16.0, 16.0), min_size=1, generator=gen)
    rois = random_rois(k, case.batch, (ih, iw), min_size=16, generator=gen).double()
    xy, idx = rois[:, 1:3], rois[:, :1]
    if case.boxes == "tiny":  # under one feature pixel per side
        wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) / case.scale
    elif case.boxes == "off-map":  # shifted up to two image sizes in any direction
        xy = xy + (torch.rand(k, 2, generator=gen, dtype=torch.float64) * 4 - 2) * torch.tensor([iw, ih])
        wh = rois[:, 3:] - rois[:, 1:3]
    elif case.boxes == "wide":  # two to ten image widths wide, ordinary heights
        wh = torch.stack([iw * (2 + 8 * torch.rand(k, generator=gen, dtype=torch.float64)),
                          rois[:, 4] - rois[:, 2]], 1)
        xy = xy - wh * torch.tensor([0.5, 0.0])
    else:
        raise ValueError(f"unknown box kind {case.boxes!r}")
    return torch.cat([idx, xy, xy + wh], 1).float()


def problem(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 NCHW map and the ``[K, 5]`` (roi_align_rotated: ``[K, 6]``) float32
    RoIs of ``case``, the same on every call (other dtypes and layouts are converted from
    these, so every variant of a case pools the same values)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.batch, case.channels, case.height, case.width, generator=gen)
    return x, _boxes(case, gen)


def pyramid_problem(p: Pyramid, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Float32 NCHW levels and ``[K, 5]`` RoIs spread over the images (sides from 16
    pixels to 0.8 of the image height, so every level gets RoIs), sorted by image as a
    detector's per-image box lists concatenate."""
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(*shape, generator=gen) for shape in p.shapes()]
    rois = random_rois(p.rois, p.batch, p.image, min_size=16, generator=gen)
    return feats, rois[torch.argsort(rois[:, 0], stable=True)]


def pixels_read(rois: torch.Tensor, shape: tuple[int, ...], scale: float, op: str, aligned: bool) -> int:
    """Pixels per channel of an ``[N, C, H, W]`` map that at least one RoI reads: the union
    of the boxes' footprints (with the bilinear neighbour), clamped to the map. It is the
    U of the roofline model (docs/performance.md), a lower bound on what a kernel must read."""
    n, _, h, w = shape
    if rois.shape[0] == 0 or h == 0 or w == 0:
        return 0
    rois = corners(rois)  # a turned box: the pixels of its enclosing box, an upper bound
    box = rois[:, 1:].double() * scale
    if op in ("roi_pool", "ps_roi_pool"):
        box = torch.round(box)
        lo, hi = box[:, :2], box[:, 2:]
    else:
        box = box - (0.5 if aligned else 0.0)
        lo, hi = torch.floor(box[:, :2]), torch.floor(box[:, 2:]) + 1
    limit = torch.tensor([w - 1, h - 1], dtype=torch.float64)
    inside = (hi >= 0).all(1) & (lo <= limit).all(1) & torch.isfinite(box).all(1)
    lo = torch.minimum(lo.clamp(min=0), limit).long()
    hi = torch.minimum(hi.clamp(min=0), limit).long()
    covered = torch.zeros(n, h, w, dtype=torch.bool)
    # A Python loop over K slices: at most a few thousand RoIs, a few milliseconds.
    for b, x0, y0, x1, y1, keep in zip(rois[:, 0].long().tolist(), *lo.T.tolist(), *hi.T.tolist(),
                                       inside.tolist(), strict=True):
        if keep and 0 <= b < n:
            covered[b, y0:y1 + 1, x0:x1 + 1] = True
    return int(covered.sum())


def reference_fits(case: Case, rois: torch.Tensor) -> bool:
    """Whether roiops.reference can run ``case`` in reasonable memory and time: it
    materialises K x C x PH x PW x samples values (roi_align) or x H x W (roi_pool).
    prroi_pool's and roi_align_rotated's baselines (bench/peers.py: prroi_pool_torch,
    roi_align_rotated_torch) work in chunks of RoIs."""
    if case.op in ("prroi_pool", "roi_align_rotated"):
        return True
    if case.op in ("roi_pool", "ps_roi_pool"):
        per_bin = case.height * case.width
    elif case.sampling_ratio > 0:
        per_bin = case.sampling_ratio**2
    else:  # adaptive: the largest box sets the grid of every RoI in the reference
        extent = (rois[:, 3:] - rois[:, 1:3]).abs().max().item() * case.scale if rois.shape[0] else 1
        per_bin = min(64, max(1, math.ceil(extent / case.size))) ** 2
    return case.rois * case.channels * case.size**2 * per_bin <= 3e7
