"""The RoI-layer ablation of the Mask R-CNN paper (Table 2c at stride 16, Table 2d at
stride 32), run with roiops' kernels: every row trained and evaluated over the same
seeds, each (row, seed) an independent run whose metrics land in a small JSON as it
finishes, so an interrupted ablation resumes where it stopped."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

# The paper's numbers (ResNet-50-C4 / C5, COCO): mask AP, AP50, AP75 and, for 2d, box AP.
PAPER = {
    ("roipool-max", 16): dict(mask_ap=26.9, mask_ap50=48.8, mask_ap75=26.4),
    ("roiwarp-max", 16): dict(mask_ap=27.2, mask_ap50=49.2, mask_ap75=27.1),
    ("roiwarp-avg", 16): dict(mask_ap=27.1, mask_ap50=48.9, mask_ap75=27.1),
    ("roialign-max", 16): dict(mask_ap=30.2, mask_ap50=51.0, mask_ap75=31.8),
    ("roialign-avg", 16): dict(mask_ap=30.3, mask_ap50=51.2, mask_ap75=31.5),
    ("roipool-max", 32): dict(mask_ap=23.6, box_ap=28.2),
    ("roialign-avg", 32): dict(mask_ap=30.9, box_ap=34.0),
}

# Table 2c's rows, two rows no paper has (nearest sampling, detectron2's aligned
# boxes), and Table 2d's pair.
ROWS = (
    ("roipool-max", 16), ("roiwarp-max", 16), ("roiwarp-avg", 16), ("roialign-max", 16), ("roialign-avg", 16),
    ("roialign-avg-nearest", 16), ("roialign-avg-aligned", 16),
    ("roipool-max", 32), ("roialign-avg", 32),
)
QUICK_ROWS = (("roipool-max", 16), ("roialign-avg", 16))
# The side the model resizes images to, per stride. At stride 32 the synthetic set's
# 128 px images give 4x4 maps on which objects of 12-60 px span under two cells, and
# neither RoI layer learned (mask AP 0.4 and 0.6 over 3 seeds); upscaled 2x, the
# stride-32 model sees the same images on 8x8 maps, through one backbone stage more
# than the stride-16 one (the paper's C5 features over C4).
IMAGE_SIZE = {16: 128, 32: 256}
# Names the model and training recipe (roiops.models defaults, TrainConfig): bump it
# whenever they change, so finished runs of an older recipe are not reused.
RECIPE = "c4-gn-head-1"
METRICS = ("mask_ap", "mask_ap50", "mask_ap75", "mask_aps", "mask_apm", "mask_apl",
           "box_ap", "box_ap50", "box_ap75", "box_aps", "box_apm", "box_apl")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    layer: str
    stride: int
    seed: int
    iterations: int
    train_dir: str
    val_dir: str
    runs_dir: str
    checkpoint_dir: str
    image_size: int = 128
    threads: int = 1

    @property
    def name(self) -> str:
        return f"{self.layer}-stride{self.stride}-seed{self.seed}"

    @property
    def checkpoint_path(self) -> Path:
        # Named by recipe and length too: a checkpoint of another recipe or schedule
        # must never be resumed.
        return Path(self.checkpoint_dir) / f"{self.name}-{RECIPE}-img{self.image_size}-it{self.iterations}.pt"

    @property
    def result_path(self) -> Path:
        return Path(self.runs_dir) / f"{self.name}.json"

    def identity(self) -> dict:
        """What a finished run must match to be reused."""
        return dict(layer=self.layer, stride=self.stride, seed=self.seed, iterations=self.iterations,
                    image_size=self.image_size, data=os.path.abspath(self.train_dir), recipe=RECIPE)


def finished(spec: RunSpec) -> dict | None:
    try:
        result = json.loads(spec.result_path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("identity") == spec.identity() else None


def run_one(spec: RunSpec, record: bool = True) -> dict:
    """Train and evaluate one (row, seed); returns its result and, with ``record``,
    writes it to ``spec.result_path``."""
    import torch

    from ..data import CocoInstances
    from ..models import mask_rcnn
    from ..models.train import TrainConfig, evaluate, train

    torch.set_num_threads(spec.threads)
    started = time.time()
    train_set, val_set = CocoInstances(spec.train_dir), CocoInstances(spec.val_dir)
    torch.manual_seed(spec.seed)  # the initial weights
    model = mask_rcnn(spec.layer, num_classes=len(train_set.category_names) + 1, stride=spec.stride,
                      image_size=spec.image_size)
    config = TrainConfig(iterations=spec.iterations, seed=spec.seed,
                         checkpoint_every=max(1, min(200, spec.iterations)))
    Path(spec.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    log = train(model, train_set, config, checkpoint=spec.checkpoint_path)
    ap = evaluate(model, val_set)
    metrics = {f"{kind}_{k.lower()}": v for kind, iou in (("mask", "segm"), ("box", "bbox"))
               for k, v in ap[iou].items()}
    tail = log[-min(50, len(log)):]
    result = dict(identity=spec.identity(), name=spec.name, metrics=metrics,
                  final_loss=sum(sum(x.values()) for x in tail) / max(len(tail), 1),
                  seconds=round(time.time() - started, 1), threads=spec.threads)
    if not record:
        return result
    spec.result_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, spec.result_path)
    return result


def run_all(specs: list[RunSpec], jobs: int, progress: bool = True) -> list[dict]:
    """Every spec's result: finished ones read back, the others run ``jobs`` at a time
    in separate processes (two one-thread processes outrun one two-thread process)."""
    _run_pool([s for s in specs if finished(s) is None], len(specs), jobs, progress, "ablation runs")
    return [finished(s) for s in specs]


def restore_checkpoints(specs: list[RunSpec], jobs: int, progress: bool = True) -> None:
    """Retrains the runs among ``specs`` whose checkpoint is not in the cache (a new
    machine, a cleared cache) for the mask figure. Training is seeded: with the same
    build on the same machine it recreates the same model; elsewhere floating-point
    differences (the extension is compiled for the machine's CPU) make it an
    equivalent model whose metrics differ in the last digits. The recorded results
    are kept either way."""
    missing = [s for s in specs if not s.checkpoint_path.exists()]
    if missing:
        print(f"retraining {len(missing)} run(s) whose checkpoints are not in the cache: "
              f"{[s.name for s in missing]} (recorded results are kept)")
        _run_pool(missing, len(missing), jobs, progress, "restoring checkpoints", record=False)


def _run_pool(todo: list[RunSpec], total: int, jobs: int, progress: bool, desc: str, record: bool = True) -> None:
    if not todo:
        return
    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - len(todo), desc=desc, disable=not progress)
    failed = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, s, record): s for s in todo}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as e:  # report it now; the other runs go on
                failed.append(futures[future].name)
                bar.write(f"run {futures[future].name} failed: {type(e).__name__}: {e}")
                continue
            bar.set_postfix_str(f"{result['name']}: mask AP {result['metrics']['mask_ap']:.1f}")
            bar.update()
    bar.close()
    if failed:
        raise RuntimeError(f"{len(failed)} ablation runs failed: {failed}; rerun to retry them")


def figure_specs(specs: list[RunSpec], layers: tuple[str, ...]) -> list[RunSpec]:
    """The runs mask_figure draws: each layer's first seed at stride 16."""
    return [next(s for s in specs if s.layer == layer and s.stride == 16 and s.seed == specs[0].seed)
            for layer in layers]


def _row_fields(layer: str) -> dict:
    from ..models import roi_layer

    spec = roi_layer(layer)
    return dict(layer={"roi_pool": "roipool", "roi_warp": "roiwarp", "roi_align": "roialign"}[spec.op],
                agg=spec.mode, bilinear=spec.op != "roi_pool" and spec.sampling == "bilinear",
                aligned=spec.aligned)


def aggregate(specs: list[RunSpec], results: list[dict], rows, seeds) -> dict:
    out_rows = []
    for layer, stride in rows:
        row_specs = [s for s in specs if (s.layer, s.stride) == (layer, stride)]
        mine = [r for s, r in zip(specs, results, strict=True) if s in row_specs]
        row = dict(name=layer, stride=stride, image_size=row_specs[0].image_size, **_row_fields(layer),
                   seeds=list(seeds))
        for m in METRICS:
            # pycocotools leaves a size class without ground truth undefined (NaN, e.g.
            # APl on 128 px images): it is None here, never averaged in.
            values = [r["metrics"][m] for r in mine if not math.isnan(r["metrics"][m])]
            if not values:
                row[m] = row[f"{m}_std"] = None
                row[f"{m}_runs"] = []
                continue
            mean = sum(values) / len(values)
            row[m] = round(mean, 2)
            # Sample standard deviation; undefined (None) for a single run.
            row[f"{m}_std"] = (round(math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1)), 2)
                               if len(values) > 1 else None)
            row[f"{m}_runs"] = [round(x, 2) for x in values]
        row["paper"] = PAPER.get((layer, stride))
        out_rows.append(row)
    first = specs[0]
    return dict(iterations=first.iterations, seeds=list(seeds), data=first.identity()["data"], recipe=RECIPE,
                machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                seconds_per_run=round(sum(r["seconds"] for r in results) / len(results), 1), rows=out_rows)


def markdown(table: dict) -> str:
    lines = [
        f"Mask R-CNN RoI ablation with roiops kernels: {len(table['seeds'])} seeds ({table['seeds']}), "
        f"{table['iterations']} iterations, mean +- std over seeds; machine: {table['machine']}.",
        "",
        "| RoI layer | agg | bilinear | aligned | stride | image | mask AP | AP50 | AP75 | APs | APm | APl | box AP "
        "| paper mask AP (AP50 / AP75) | paper box AP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        p = r["paper"] or {}
        paper = f"{p['mask_ap']}" if p else "-"
        if "mask_ap50" in p:
            paper += f" ({p['mask_ap50']} / {p['mask_ap75']})"

        def pm(m, r=r):
            if r[m] is None:
                return "-"
            return f"{r[m]:.1f}" if r[m + "_std"] is None else f"{r[m]:.1f} +- {r[m + '_std']:.1f}"

        def one(m, r=r):
            return "-" if r[m] is None else f"{r[m]:.1f}"

        lines.append(
            f"| {r['layer']} | {r['agg']} | {'yes' if r['bilinear'] else 'no'} | {'yes' if r['aligned'] else 'no'} "
            f"| {r['stride']} | {r['image_size']} | {pm('mask_ap')} | {pm('mask_ap50')} | {pm('mask_ap75')} "
            f"| {one('mask_aps')} | {one('mask_apm')} | {one('mask_apl')} | {pm('box_ap')} | {paper} "
            f"| {p.get('box_ap', '-')} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    labels = [f"{r['name']}\nstride {r['stride']}, {r['image_size']} px" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4.5))
    xs = range(len(rows))
    ax.bar(xs, [r["mask_ap"] for r in rows], yerr=[r["mask_ap_std"] or 0 for r in rows], capsize=4,
           color=["#c44" if r["layer"] == "roipool" else "#d93" if r["layer"] == "roiwarp" else "#48c" for r in rows],
           label="roiops (synthetic data)")
    paper = [(x, r["paper"]["mask_ap"]) for x, r in zip(xs, rows, strict=True) if r["paper"]]
    if paper:
        ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker="_", s=400, color="k", zorder=3,
                   label="paper (COCO)")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("mask AP")
    ax.set_title(f"RoI layer ablation, {len(table['seeds'])} seeds, {table['iterations']} iterations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mask_figure(chosen: list[RunSpec], path: Path, count: int = 4) -> None:
    """Predicted masks of the chosen runs (figure_specs; their checkpoints must exist:
    restore_checkpoints) on the same validation images, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..data import CocoInstances
    from ..models import mask_rcnn

    val = CocoInstances(chosen[0].val_dir)
    images = [val[i][0] for i in range(min(count, len(val)))]
    fig, axes = plt.subplots(len(images), len(chosen), figsize=(3 * len(chosen), 3 * len(images)), squeeze=False)
    for col, spec in enumerate(chosen):
        model = mask_rcnn(spec.layer, num_classes=len(val.category_names) + 1, stride=spec.stride,
                          image_size=spec.image_size)
        state = torch.load(spec.checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        model.eval()
        with torch.no_grad():
            outputs = model(images)
        for row, (image, out) in enumerate(zip(images, outputs, strict=True)):
            keep = out["scores"] > 0.5
            overlay = image.permute(1, 2, 0).clone()
            colours = torch.eye(3).repeat(2, 1) + torch.tensor([[0.0, 0, 0]] * 3 + [[1, 1, 0], [0, 1, 1], [1, 0, 1]])
            for i, m in enumerate(out["masks"][keep, 0] > 0.5):
                overlay[m] = 0.45 * overlay[m] + 0.55 * colours[i % len(colours)]
            ax = axes[row][col]
            ax.imshow(overlay.clamp(0, 1).numpy())
            ax.set_axis_off()
            if row == 0:
                ax.set_title(spec.layer, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
