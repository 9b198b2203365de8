"""Command line of the ablation; ``python -m roiops.ablation --help``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from . import runner


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m roiops.ablation", description=__doc__)
    p.add_argument("--seeds", type=int, default=3, help="seeds per row, the same for every row (default 3)")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per run (default 1200)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default 2)")
    p.add_argument("--data", type=Path, default=None,
                   help="a folder with train/ and val/ COCO-format subfolders (annotations.json + images/); "
                        "default: the synthetic set, generated once into the cache")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("ROIOPS_CACHE", "~/.cache/roiops")).expanduser(),
                   help="where the synthetic data and the run checkpoints go (default ~/.cache/roiops)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results, or benchmarks/results/quick with --quick)")
    p.add_argument("--runs", type=Path, default=None,
                   help="per-run results folder, read and written (default OUT/ablation-runs, or "
                        "OUT/ablation-runs-quick with --quick); e.g. aggregate fewer seeds of finished runs elsewhere")
    p.add_argument("--json", type=Path, default=None, help="also write the results JSON here")
    p.add_argument("--quick", action="store_true",
                   help="a few minutes: 2 rows, 1 seed, 30 iterations on a small synthetic set")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from ..data import synthetic_dataset

    quick = args.quick
    rows = runner.QUICK_ROWS if quick else runner.ROWS
    seeds = list(range(1 if quick else args.seeds))
    iterations = args.iterations or (30 if quick else 1200)
    out = args.out or Path("benchmarks/results/quick" if quick else "benchmarks/results")
    tag = "quick" if quick else "full"
    if args.data is not None:
        train_dir, val_dir = args.data / "train", args.data / "val"
    elif quick:
        train_dir, val_dir = synthetic_dataset(args.cache / "synthetic-quick", seed=0, train_images=64, val_images=16,
                                               progress=not args.no_progress)
    else:
        train_dir, val_dir = synthetic_dataset(args.cache / "synthetic", seed=0, progress=not args.no_progress)
    specs = [
        runner.RunSpec(layer, stride, seed, iterations, str(train_dir), str(val_dir),
                       runs_dir=str(args.runs or (out / f"ablation-runs-{tag}" if quick else out / "ablation-runs")),
                       checkpoint_dir=str(args.cache / f"checkpoints-{tag}"), image_size=runner.IMAGE_SIZE[stride])
        for seed in seeds for layer, stride in rows  # every row's first seed first: partial runs cover all rows
    ]
    results = runner.run_all(specs, args.jobs, progress=not args.no_progress)
    table = runner.aggregate(specs, results, rows, seeds)
    name = "ablation-quick" if quick else "ablation-table2c"
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(table, indent=1)
    (out / f"{name}.json").write_text(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    md = runner.markdown(table)
    (out / f"{name}.md").write_text(md)
    runner.bar_chart(table, out / f"{name}.png")
    drawn = runner.figure_specs(specs, ("roipool-max", "roiwarp-max", "roialign-max") if not quick
                                else ("roipool-max", "roialign-avg"))
    runner.restore_checkpoints(drawn, args.jobs, progress=not args.no_progress)
    runner.mask_figure(drawn, out / f"{name}-masks.png")
    print(md)
    print(f"results: {out / name}.json, .md, .png, -masks.png; per-run results in {specs[0].runs_dir}")


if __name__ == "__main__":
    main()
