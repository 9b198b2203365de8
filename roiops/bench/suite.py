"""The measurements of one configuration (one allocator setting, run in a process of its
own): every case x dtype x layout x pass with each implementation on the same inputs,
the FPN multilevel case and the scaling sweeps. Each row is a plain dict (JSON)."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from functools import partial

import torch

from . import peers as P
from .cases import (
    BANDWIDTH_CASE,
    CASES,
    QUICK_SWEEP_CHANNELS,
    QUICK_SWEEP_ROIS,
    SWEEP_CHANNELS,
    SWEEP_ROIS,
    THREAD_CASES,
    Case,
    Pyramid,
    pixels_read,
    problem,
    pyramid_problem,
    reference_fits,
)
from .timing import FULL, ONCE, QUICK, Timer, copy_bandwidth, fresh_tensor, load_average, machine

LAYOUTS = ("NCHW", "channels_last")
DIRECTIONS = ("fwd", "fwd+bwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Outputs agree when |a - b| <= atol + rtol * |b| everywhere. ONNX Runtime and OpenVINO
# against torchvision: 1e-5 (all three compute in float32). roiops against torchvision:
# roiops computes sample positions in float64, torchvision in float32, which moves a
# sample by up to about 1e-5 pixel on maps of a few hundred pixels: 1e-4. A float32
# position errs in proportion to its magnitude, so that bound grows with boxes reaching
# beyond SAMPLE_REACH map pixels (edge-wide's reach 840: 1.3e-4 measured). bfloat16
# (roiops rounds a float32 result once): two bfloat16 ulps.
RUNTIME_TOLERANCE = (1e-5, 1e-5)
TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (1e-3, 2**-7)}
SAMPLE_REACH = 500.0
# torchvision computes roi_pool's bins in float32, which adds a row or column to the
# last bin for 0.01-0.1% of outputs on large maps (README): tolerated up to this fraction.
ROI_POOL_BIN_DIFFERENCES = 0.002

Job = tuple[str, Callable[[], dict]]


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return t.contiguous(memory_format=fmt)


def torchvision_tolerance(case: Case, rois: torch.Tensor, dtype: torch.dtype) -> tuple[float, float]:
    """roiops' tolerance against torchvision for ``case`` pooled on ``rois``: TOLERANCE,
    its absolute part scaled by how far beyond SAMPLE_REACH map pixels the boxes reach
    (roi_pool and ps_roi_pool compare bins, not positions)."""
    atol, rtol = TOLERANCE[dtype]
    if case.op not in ("roi_align", "ps_roi_align") or rois.numel() == 0:
        return atol, rtol
    reach = float(rois[:, 1:].abs().max()) * case.scale
    return atol * max(1.0, reach / SAMPLE_REACH), rtol


def agreement(op: str, ours: torch.Tensor, theirs: torch.Tensor, tolerance: tuple[float, float]) -> dict:
    """How two outputs of the same problem differ: the largest difference, the fraction
    of outputs beyond ``tolerance`` (atol, rtol), and whether that is within what the
    op allows (nothing for roi_align)."""
    ours, theirs = ours.detach().float().cpu(), theirs.detach().float().cpu()
    atol, rtol = tolerance
    diff = (ours - theirs).abs()
    beyond = ~(diff <= atol + rtol * theirs.abs())  # NaN counts as beyond
    differing = beyond.float().mean().item() if diff.numel() else 0.0
    allowed = ROI_POOL_BIN_DIFFERENCES if op in ("roi_pool", "ps_roi_pool") else 0.0
    return dict(max_abs_diff=float(diff.max()) if diff.numel() else 0.0, differing=differing,
                tolerance=[atol, rtol], agrees=differing <= allowed)


def per_level_roi_align(features: list[torch.Tensor], rois: torch.Tensor, scales: list[float], size: int,
                        sampling_ratio: int) -> torch.Tensor:
    """What torchvision's MultiScaleRoIAlign does, with roiops' roi_align per level: pick
    each level's RoIs (nonzero), pool them, scatter into the output. The baseline of the
    fused multilevel op. The output takes the finest level's memory format, as the fused
    op's does, so neither pays a layout conversion the other does not."""
    import roiops

    levels = fpn_level_index(rois, scales)
    finest = features[0]
    channels_last = finest.is_contiguous(memory_format=torch.channels_last) and not finest.is_contiguous()
    out = torch.empty((rois.shape[0], finest.shape[1], size, size), dtype=finest.dtype, device=finest.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format).zero_()
    for level, (x, scale) in enumerate(zip(features, scales, strict=True)):
        picked = torch.where(levels == level)[0]
        out[picked] = roiops.roi_align(x, rois[picked], size, scale, sampling_ratio, False)
    return out


def thread_label(threads: int) -> str:
    return f"roiops {threads} thread{'s' if threads > 1 else ''}"


def fpn_level_index(rois: torch.Tensor, scales: list[float]) -> torch.Tensor:
    """The index into ``scales`` (finest first) of each RoI's FPN level."""
    import roiops

    first = round(-math.log2(scales[0]))
    return roiops.fpn_levels(rois, first, first + len(scales) - 1)


class Progress:
    """A tqdm bar on stderr, or plain lines where tqdm is not installed."""

    def __init__(self, total: int, desc: str, enabled: bool, notes: list[str]):
        self.bar = None
        self.total, self.done, self.desc, self.enabled = total, 0, desc, enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            notes.append("tqdm is not installed: progress is shown as plain lines")
            return
        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=True)
        elif self.enabled:
            print(f"{self.desc} [{self.done + 1}/{self.total}] {label}", file=sys.stderr, flush=True)

    def done_one(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Suite:
    """Runs the planned rows of one configuration on ``device``."""

    def __init__(self, device: torch.device, threads: int, quick: bool, peers: dict[str, str]):
        self.device, self.threads, self.quick, self.peers = device, threads, quick, peers
        self.timer = Timer(device, QUICK if quick else FULL)
        # Thread scaling means nothing for a GPU kernel: its sweeps time "roiops" alone.
        self.thread_counts = sorted({1, threads}) if device.type == "cpu" else []
        self.copy_gbs: float | None = None
        # Timings shown in several rows, measured once (a runtime's NCHW time appears in
        # both layouts' rows; torchvision float32 in the bfloat16 rows).
        self.memo: dict[tuple, object] = {}
        # The inputs of the case being run; replaced (and freed) when the next case starts.
        self.inputs: tuple[str, dict] = ("", {})
        self.tv_dtypes: dict[tuple, torch.dtype] = {}

    # -- plan ------------------------------------------------------------------------

    def plan(self, cases: list[Case], dtypes: list[str], multilevel: bool, scaling: bool) -> list[Job]:
        jobs: list[Job] = []
        for case in cases:
            for dtype in dtypes:
                for layout in LAYOUTS:
                    for direction in DIRECTIONS:
                        jobs.append((f"{case.name} {dtype} {layout} {direction}",
                                     partial(self.single_row, case, dtype, layout, direction)))
        if multilevel:
            p = Pyramid().quick() if self.quick else Pyramid()
            for layout in LAYOUTS:
                for direction in DIRECTIONS:
                    jobs.append((f"{p.name} {layout} {direction}", partial(self.pyramid_row, p, layout, direction)))
        if scaling:
            jobs += self._scaling_jobs()
        return jobs

    def _scaled(self, name: str) -> Case:
        case = next(c for c in CASES if c.name == name)
        return case.quick() if self.quick else case

    def _scaling_jobs(self) -> list[Job]:
        jobs: list[Job] = []
        if len(self.thread_counts) > 1:
            for case in map(self._scaled, THREAD_CASES):
                for layout in LAYOUTS:
                    for direction in DIRECTIONS:
                        jobs.append((f"threads {case.name} {layout} {direction}",
                                     partial(self.sweep_row, "threads", case, layout, direction)))
        base = self._scaled(BANDWIDTH_CASE)
        for k in QUICK_SWEEP_ROIS if self.quick else SWEEP_ROIS:
            case = dataclasses.replace(base, name=f"{base.name}-k{k}", rois=k)
            for layout in LAYOUTS:
                jobs.append((f"RoIs {k} {layout}", partial(self.sweep_row, "rois", case, layout, "fwd")))
        for c in QUICK_SWEEP_CHANNELS if self.quick else SWEEP_CHANNELS:
            case = dataclasses.replace(base, name=f"{base.name}-c{c}", channels=c)
            for layout in LAYOUTS:
                jobs.append((f"channels {c} {layout}", partial(self.sweep_row, "channels", case, layout, "fwd")))
        return jobs

    def run(self, jobs: list[Job], desc: str, progress: bool, notes: list[str]) -> list[dict]:
        bar = Progress(len(jobs), desc, progress, notes)
        rows = []
        try:
            for label, job in jobs:
                bar.step(label)
                try:
                    rows.append(job())
                except Exception as error:  # a bug in one row must not cost the other rows
                    notes.append(f"row '{label}' failed and is missing: {type(error).__name__}: {error}")
                bar.done_one()
        finally:
            bar.close()
        return rows

    # -- inputs and timing -----------------------------------------------------------

    def _store(self, name: str, make: Callable[[], dict]) -> dict:
        if self.inputs[0] != name:
            self.inputs = ("", {})  # free the previous case's tensors before making these
            self.inputs = (name, make())
        return self.inputs[1]

    def _case_inputs(self, case: Case, dtype: torch.dtype, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
        def make() -> dict:
            x, rois = problem(case)
            return {"base": (x, rois), "pixels": pixels_read(rois, tuple(x.shape), case.scale, case.op, case.aligned)}

        store = self._store(case.name, make)
        if (dtype, layout) not in store:
            x, rois = store["base"]
            store[dtype, layout] = (_layout(x.to(self.device, dtype), layout), rois.to(self.device))
        return store[dtype, layout]

    def _time(self, op: Callable, x: torch.Tensor | list[torch.Tensor], rois: torch.Tensor, direction: str,
              policy=None) -> dict:
        """Times ``op(x, rois)``, or it and the gradient with respect to ``x`` (a map or a
        list of levels). A failure is recorded in place of the timing, so one broken
        implementation does not stop the run."""
        try:
            if direction == "fwd":
                return self.timer.measure(lambda: op(x, rois), policy)
            leaves = [t.detach().requires_grad_() for t in (x if isinstance(x, list) else [x])]
            arg = leaves if isinstance(x, list) else leaves[0]
            grad = torch.ones_like(op(arg, rois))
            # allow_unused: a pyramid level no RoI maps to is not in the per-level graph.
            return self.timer.measure(lambda: torch.autograd.grad(op(arg, rois), leaves, grad, allow_unused=True),
                                      policy)
        except Exception as error:  # reported in the row; the run goes on
            return {"error": f"{type(error).__name__}: {error}"[:400]}

    def _memo(self, key: tuple, measure: Callable[[], object]):
        if key not in self.memo:
            self.memo[key] = measure()
        return self.memo[key]

    def _tv_dtype(self, case: Case, dtype: torch.dtype) -> torch.dtype:
        key = (case.op, dtype)
        if key not in self.tv_dtypes:
            self.tv_dtypes[key] = dtype if P.torchvision_supports(case, dtype, self.device) else torch.float32
        return self.tv_dtypes[key]

    def _row(self, section: str, case: Case, dtype: str, layout: str, direction: str) -> dict:
        return dict(section=section, case=case.name, op=case.op, edge=case.edge, boxes=case.boxes, dtype=dtype,
                    layout=layout, direction=direction, rois=case.rois, channels=case.channels,
                    map=f"{case.batch}x{case.height}x{case.width}", scale=case.scale, output_size=case.size,
                    sampling_ratio=case.sampling_ratio, aligned=case.aligned, threads=self.threads,
                    impls={}, checks={}, compared_dtype={})

    def _bandwidth(self, row: dict, nbytes: float, t: dict) -> None:
        """Effective GB/s of roiops (timing ``t``): the bytes it must move at least over
        its time, and that as a fraction of this run's copy bandwidth."""
        row["bytes"] = int(nbytes)
        if "median_ms" in t and t["median_ms"] > 0:
            row["gbs"] = round(nbytes / (t["median_ms"] * 1e-3) / 1e9, 3)
            row["copy_fraction"] = round(row["gbs"] / self.copy_gbs, 4) if self.copy_gbs else None

    @staticmethod
    def _traffic(out_numel: int, pixels: int, channels: int, map_numel: int, itemsize: int, direction: str) -> int:
        """Roofline bytes (docs/performance.md): forward writes the output and reads the pixels
        the boxes cover (U) in every output channel's input channels (one per output
        channel, or for the position-sensitive ops at least one); backward reads the output
        gradient and writes the input gradient once (F)."""
        fwd = out_numel + pixels * channels
        return itemsize * (fwd if direction == "fwd" else fwd + out_numel + map_numel)

    # -- rows ------------------------------------------------------------------------

    def single_row(self, case: Case, dtype_name: str, layout: str, direction: str) -> dict:
        dtype = DTYPES[dtype_name]
        x, rois = self._case_inputs(case, dtype, layout)
        row = self._row("single", case, dtype_name, layout, direction)
        ours = P.roiops_op(case)
        row["impls"]["roiops"] = self._time(ours, x, rois, direction)
        out_numel = case.rois * case.output_channels * case.size**2
        self._bandwidth(row, self._traffic(out_numel, self.inputs[1]["pixels"], case.output_channels, x.numel(),
                                           x.element_size(), direction), row["impls"]["roiops"])
        expected = None  # torchvision's float32 NCHW output, what the runtimes must match
        if "torchvision" in self.peers and P.torchvision_has(case):
            tv = P.torchvision_op(case)
            tv_dtype = self._tv_dtype(case, dtype)
            tx, trois = self._case_inputs(case, tv_dtype, layout)
            row["impls"]["torchvision"] = self._memo(("torchvision", case.name, tv_dtype, layout, direction),
                                                     lambda: self._time(tv, tx, trois, direction))
            if tv_dtype != dtype:
                row["compared_dtype"]["torchvision"] = str(tv_dtype).removeprefix("torch.")
            if direction == "fwd":
                try:
                    # On the values roiops pooled (bfloat16 ones for bfloat16 rows).
                    row["checks"]["torchvision"] = agreement(case.op, ours(x, rois),
                                                             tv(x.to(tv_dtype), rois.to(tv_dtype)),
                                                             torchvision_tolerance(case, rois, dtype))
                    base_x, base_rois = self.inputs[1]["base"]
                    expected = tv(base_x.to(self.device), base_rois.to(self.device))
                except Exception as error:  # the timing row already holds the error
                    row["checks"]["torchvision"] = {"error": f"{type(error).__name__}: {error}"[:400]}
        if direction == "fwd" and dtype == torch.float32:
            self._runtimes(case, row, expected)
            if "reference" in self.peers and reference_fits(case, rois):
                base_x, base_rois = self.inputs[1]["base"]
                ref = P.reference_op(case)
                row["impls"]["reference"] = self._memo(
                    ("reference", case.name),
                    lambda: self._time(ref, base_x.to(self.device), base_rois.to(self.device), "fwd", ONCE))
        return row

    def _runtimes(self, case: Case, row: dict, expected: torch.Tensor | None) -> None:
        """ONNX Runtime and OpenVINO (roi_align only: ONNX has no RoIPool with these
        semantics) on the NCHW float32 map, timed only if their output matches."""
        if case.op != "roi_align" or self.device.type != "cpu":
            return
        base_x, base_rois = self.inputs[1]["base"]
        tolerance = RUNTIME_TOLERANCE
        if expected is None:  # no torchvision here: compare with roiops, to roiops' tolerance
            expected, tolerance = P.roiops_op(case)(base_x, base_rois), TOLERANCE[torch.float32]
        for name, make in (("onnxruntime", P.onnxruntime_runner), ("openvino", P.openvino_runner)):
            if name not in self.peers:
                continue

            def measure(make=make) -> tuple[dict, dict]:
                try:
                    runner = make(case, base_x, base_rois, self.threads)
                    runner.run()
                    check = agreement(case.op, runner.output(), expected, tolerance)
                    if not check["agrees"]:
                        return {"error": f"output differs by up to {check['max_abs_diff']:.3g} (tolerance "
                                         f"{tolerance[0]:g}): not timed"}, check
                    return self.timer.measure(runner.run), check
                except Exception as error:  # reported in the row; the run goes on
                    return {"error": f"{type(error).__name__}: {error}"[:400]}, {}

            row["impls"][name], check = self._memo((name, case.name), measure)
            if check:
                row["checks"][name] = check

    def _pyramid_inputs(self, p: Pyramid, layout: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        def make() -> dict:
            feats, rois = pyramid_problem(p)
            levels = fpn_level_index(rois, list(p.scales))
            pixels = [pixels_read(rois[levels == i], tuple(f.shape), s, "roi_align", False)
                      for i, (f, s) in enumerate(zip(feats, p.scales, strict=True))]
            return {"base": (feats, rois), "pixels": sum(pixels), "per_level": torch.bincount(levels, minlength=4)}

        store = self._store(p.name, make)
        if layout not in store:
            feats, rois = store["base"]
            store[layout] = ([_layout(f.to(self.device), layout) for f in feats], rois.to(self.device))
        return store[layout]

    def pyramid_row(self, p: Pyramid, layout: str, direction: str) -> dict:
        import roiops

        feats, rois = self._pyramid_inputs(p, layout)
        store = self.inputs[1]
        row = dict(section="multilevel", case=p.name, op="roi_align", edge=False, boxes="random", dtype="float32",
                   layout=layout, direction=direction, rois=p.rois, channels=p.channels,
                   map=" + ".join(f"{h}x{w}" for _, _, h, w in p.shapes()), batch=p.batch,
                   rois_per_level=store["per_level"].tolist(), scale=list(p.scales), output_size=p.size,
                   sampling_ratio=p.sampling_ratio, aligned=False, threads=self.threads, impls={}, checks={},
                   compared_dtype={})
        fused = roiops.MultiScaleRoIPooler(p.size, list(p.scales), "roi_align", p.sampling_ratio, aligned=False)
        per_level = partial(per_level_roi_align, scales=list(p.scales), size=p.size, sampling_ratio=p.sampling_ratio)
        row["impls"]["roiops fused"] = self._time(fused, feats, rois, direction)
        row["impls"]["roiops per level"] = self._time(per_level, feats, rois, direction)
        self._bandwidth(row, self._traffic(p.rois * p.channels * p.size**2, store["pixels"], p.channels,
                                           sum(f.numel() for f in feats), 4, direction), row["impls"]["roiops fused"])
        ours = fused(feats, rois) if direction == "fwd" else None
        if ours is not None:
            row["checks"]["roiops per level"] = agreement("roi_align", ours, per_level(feats, rois), RUNTIME_TOLERANCE)
        if "torchvision" in self.peers:
            import torchvision

            names = [f"p{i + 2}" for i in range(len(feats))]
            tv = torchvision.ops.MultiScaleRoIAlign(names, p.size, p.sampling_ratio)
            # torchvision takes a box list per image and the image sizes; made once, as
            # a detector has them.
            boxes = [rois[rois[:, 0] == i, 1:] for i in range(p.batch)]
            shapes = [p.image] * p.batch

            def tv_op(levels: list[torch.Tensor], _rois: torch.Tensor) -> torch.Tensor:
                return tv(dict(zip(names, levels, strict=True)), boxes, shapes)

            row["impls"]["torchvision MultiScaleRoIAlign"] = self._time(tv_op, feats, rois, direction)
            if ours is not None:
                row["checks"]["torchvision MultiScaleRoIAlign"] = agreement("roi_align", ours, tv_op(feats, rois),
                                                                            TOLERANCE[torch.float32])
        return row

    def sweep_row(self, section: str, case: Case, layout: str, direction: str) -> dict:
        """roiops at each thread count (and torchvision, outside the threads section) on
        one point of a sweep."""
        x, rois = self._case_inputs(case, torch.float32, layout)
        row = self._row(section, case, "float32", layout, direction)
        ours = P.roiops_op(case)
        if self.device.type != "cpu":
            row["impls"]["roiops"] = self._time(ours, x, rois, direction)
        for t in self.thread_counts:
            torch.set_num_threads(t)
            try:
                row["impls"][thread_label(t)] = self._time(ours, x, rois, direction)
            finally:
                torch.set_num_threads(self.threads)
        self._bandwidth(row, self._traffic(case.rois * case.channels * case.size**2, self.inputs[1]["pixels"],
                                           case.channels, x.numel(), 4, direction),
                        row["impls"]["roiops" if self.device.type != "cpu" else thread_label(self.threads)])
        if section != "threads" and "torchvision" in self.peers:
            row["impls"]["torchvision"] = self._time(P.torchvision_op(case), x, rois, direction)
        return row


def measure_config(allocator: str, description: str, device: torch.device, threads: int, quick: bool,
                   peer_names: list[str], cases: list[Case], dtypes: list[str], multilevel: bool, scaling: bool,
                   progress: bool) -> dict:
    """Everything one configuration measures, as a JSON-ready dict: the machine, the
    copy bandwidth at the start and the end, a fresh-allocation probe, the rows."""
    began = time.time()
    torch.set_num_threads(threads)
    versions, notes = P.load(peer_names, device)
    suite = Suite(device, threads, quick, versions)
    load_start = load_average()
    bandwidth_start = copy_bandwidth(suite.timer)
    suite.copy_gbs = bandwidth_start["gbs"]
    fresh = fresh_tensor(suite.timer)
    jobs = suite.plan(cases, dtypes, multilevel, scaling)
    rows = suite.run(jobs, allocator, progress, notes)
    return dict(allocator=allocator, description=description, machine=machine(device, threads), peers=versions,
                notes=notes, load_start=load_start, load_end=load_average(), copy_bandwidth_start=bandwidth_start,
                copy_bandwidth_end=copy_bandwidth(suite.timer), fresh_tensor=fresh, rows=rows,
                seconds=round(time.time() - began, 1))
