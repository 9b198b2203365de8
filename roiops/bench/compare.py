"""Compares roiops' own times across benchmark runs, e.g. builds or CPU kernel variants:

    ROIOPS_CPU_CAPABILITY=default python -m roiops.bench --out /tmp/default ...
    ROIOPS_CPU_CAPABILITY=avx2 python -m roiops.bench --out /tmp/avx2 ...
    python -m roiops.bench.compare /tmp/default/cpu-bench.json /tmp/avx2/cpu-bench.json

Rows are matched by case, dtype, layout, direction and allocator; each run's roiops
median is shown with its ratio to the first run's (above 1: slower than the first).
Runs made one after another on a shared machine differ by the machine's noise too:
repeat them in alternating order and pass each one's repeats as one comma-separated
argument (``a1.json,a2.json,a3.json``): its time is then the median of theirs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def row_key(config: dict, row: dict) -> tuple:
    return (row["case"], row["dtype"], row["layout"], row["direction"], config["allocator"])


def roiops_times(paths: list[Path]) -> tuple[str, dict[tuple, float]]:
    """The runs' CPU kernel variant and roiops' median ms per single-map row, the median
    over the repeated runs ``paths`` (rows they do not all have are left out)."""
    variants, runs = set(), []
    for path in paths:
        result = json.loads(path.read_text())
        variants.add(result["machine"].get("cpu_capability", "unknown"))
        runs.append({row_key(config, row): row["impls"]["roiops"]["median_ms"]
                     for config in result["configs"] for row in config["rows"]
                     if row["section"] == "single" and "roiops" in row["impls"]})
    keys = [k for k in runs[0] if all(k in r for r in runs[1:])]
    return "/".join(sorted(variants)), {k: statistics.median(r[k] for r in runs) for k in keys}


def table(labels: list[str], runs: list[dict[tuple, float]]) -> str:
    keys = [k for k in runs[0] if all(k in r for r in runs[1:])]
    lines = ["| case | dtype | layout | direction | allocator | " + " | ".join(f"{lb} ms" for lb in labels)
             + "".join(f" | {lb} / {labels[0]}" for lb in labels[1:]) + " |",
             "|---" * (5 + 2 * len(labels) - 1) + "|"]
    ratios = [[] for _ in labels[1:]]
    for key in keys:
        base = runs[0][key]
        cells = [f"{r[key]:.2f}" for r in runs]
        for i, r in enumerate(runs[1:]):
            ratios[i].append(r[key] / base)
            cells.append(f"{r[key] / base:.2f}")
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
    for label, rs in zip(labels[1:], ratios, strict=True):
        if rs:
            lines.append(f"\n{label} / {labels[0]}: median {statistics.median(rs):.2f}, "
                         f"range {min(rs):.2f}-{max(rs):.2f} over {len(rs)} rows")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roiops.bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=lambda s: [Path(x) for x in s.split(",")],
                   help="cpu-bench.json files of python -m roiops.bench; repeats of one run comma-separated")
    p.add_argument("--labels", default=None, help="comma-separated names of the runs (default: their variants)")
    args = p.parse_args(argv)
    loaded = [roiops_times(path) for path in args.runs]
    labels = args.labels.split(",") if args.labels else [variant for variant, _ in loaded]
    if len(labels) != len(loaded):
        p.error(f"{len(labels)} labels for {len(loaded)} runs")
    print(table(labels, [times for _, times in loaded]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
