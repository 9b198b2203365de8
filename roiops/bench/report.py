"""The benchmark's report: the speed targets judged on the measured rows, the markdown
tables, the JSON, and the figures (speedup per case; time against RoIs and channels)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from .timing import CPU_WAIT_LIMIT, NOISY_SPREAD

RUNTIMES = ("onnxruntime", "openvino")
NAMES = {"torchvision": "torchvision", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO",
         "reference": "reference"}
# The speed targets roiops sets itself on a 2-core CPU (docs/performance.md); the layout target last.
TV_TARGET = {"mapped": 10.0, "default": 5.0}
ROI_POOL_BACKWARD_TARGET = 5.0
RUNTIME_TARGET = 3.0
COPY_FRACTION_TARGET = 0.5
MULTILEVEL_TARGET = 1.3
LAYOUT_TARGET = 1.3


def median(t: dict | None) -> float | None:
    return t["median_ms"] if t and "median_ms" in t else None


def ratio(row: dict, other: str, ours: str = "roiops") -> float | None:
    """How many times faster ``ours`` is than ``other`` in ``row`` (None if either is missing)."""
    a, b = median(row["impls"].get(ours)), median(row["impls"].get(other))
    return b / a if a and b else None


def _where(row: dict) -> str:
    dtype = "" if row["dtype"] == "float32" else f" {row['dtype']}"
    return f"{row['case']} {row['layout']} {row['direction']}{dtype}"


# -- targets -----------------------------------------------------------------------------


def _judge(target: str, setting: str, items: Iterable[tuple[dict, float | None, float]], higher: bool = True,
           unit: str = "x", missing: str = "not measured") -> dict:
    """One target over ``(row, value, threshold)`` items: met when every value is on the
    right side of its threshold; the worst item (relative to its threshold) is shown."""
    items = [(row, value, threshold) for row, value, threshold in items if value is not None]
    result = dict(target=target, setting=setting, rows=len(items), met=None, worst=None, where=None,
                  rows_met=0, unit=unit, note=missing if not items else "")
    if not items:
        return result

    def margin(item):
        _, value, threshold = item
        return value / threshold if higher else threshold / value

    worst = min(items, key=margin)
    ok = [it for it in items if margin(it) >= 1]
    result.update(met=len(ok) == len(items), worst=round(worst[1], 4), threshold=worst[2], where=_where(worst[0]),
                  rows_met=len(ok))
    return result


def targets(result: dict) -> list[dict]:
    """roiops' speed targets, each judged on the rows of the setting it names."""
    by_name = {c["allocator"]: c for c in result["configs"]}
    out = []

    def rows(allocator: str, section: str = "single", dtype: str = "float32") -> list[dict]:
        config = by_name.get(allocator)
        return [r for r in (config["rows"] if config else []) if r["section"] == section and r["dtype"] == dtype
                and not r["edge"]]

    for allocator, factor in TV_TARGET.items():
        def threshold(row, factor=factor):
            backward = row["op"] == "roi_pool" and row["direction"] == "fwd+bwd"
            return min(factor, ROI_POOL_BACKWARD_TARGET) if backward else factor
        exception = " (roi_pool fwd+bwd >= 5x)" if factor > ROI_POOL_BACKWARD_TARGET else ""
        out.append(_judge(f"roiops >= {factor:g}x torchvision{exception}, every case, fwd and fwd+bwd, both layouts",
                          allocator, ((r, ratio(r, "torchvision"), threshold(r)) for r in rows(allocator))))
    for runtime in RUNTIMES:
        out.append(_judge(f"roiops >= {RUNTIME_TARGET:g}x {NAMES[runtime]} RoiAlign, every roi_align case, fwd, "
                          "both roiops layouts", "mapped",
                          ((r, ratio(r, runtime), RUNTIME_TARGET) for r in rows("mapped") if r["direction"] == "fwd"),
                          missing="not measured (not installed, or its output disagreed)"))
    bandwidth = [r for r in rows("mapped") if r["case"] == "box-50x84" and r["layout"] == "channels_last"
                 and r["direction"] == "fwd"]
    out.append(_judge(f">= {COPY_FRACTION_TARGET:.0%} of copy bandwidth, box-50x84 channels_last fwd", "mapped",
                      ((r, r.get("copy_fraction"), COPY_FRACTION_TARGET) for r in bandwidth), unit="of copy BW"))
    out.append(_judge(f"fused multilevel >= {MULTILEVEL_TARGET:g}x per-level roiops calls, fwd and fwd+bwd, "
                      "both layouts", "+".join(by_name),
                      ((r, ratio(r, "roiops per level", "roiops fused"), MULTILEVEL_TARGET)
                       for a in by_name for r in rows(a, "multilevel"))))
    layout_items = []
    for r in rows("mapped"):
        if r["layout"] == "NCHW":
            twin = next((t for t in rows("mapped") if t["case"] == r["case"] and t["direction"] == r["direction"]
                         and t["layout"] == "channels_last"), None)
            value = median(r["impls"].get("roiops")) / median(twin["impls"].get("roiops")) if (
                twin and median(r["impls"].get("roiops")) and median(twin["impls"].get("roiops"))) else None
            layout_items.append((r, value, LAYOUT_TARGET))
    out.append(_judge(f"NCHW within {LAYOUT_TARGET:g}x of channels_last (part 1), every case, fwd and fwd+bwd",
                      "mapped", layout_items, higher=False, unit="x slower"))
    return out


# -- markdown ----------------------------------------------------------------------------


def _num(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 0.1 else f"{ms:.3f}"


class Cells:
    """Formats timings as table cells and collects the footnotes they need."""

    def __init__(self):
        self.errors: list[str] = []

    def time(self, row: dict, impl: str, base: str | None = None) -> str:
        t = row["impls"].get(impl)
        if t is None:
            return "-"
        if "error" in t:
            self.errors.append(f"{_where(row)}, {impl}: {t['error']}")
            return f"error [{len(self.errors)}]"
        text = f"{_num(t['median_ms'])} ±{100 * t['spread']:.0f}%" + (" !" if t["noisy"] else "")
        if t["repeats"] == 1:
            text = f"{_num(t['median_ms'])} (1 run)"
        if base:
            r = ratio(row, impl, base)
            text += f" ({r:.1f}x)" if r and r >= 1 else f" ({r:.2f}x)" if r else ""
        return text


def _bandwidth_cell(row: dict) -> str:
    if row.get("gbs") is None:
        return "-"
    fraction = row.get("copy_fraction")
    return f"{row['gbs']:.1f}" + (f" ({100 * fraction:.0f}%{' cache' if fraction > 1 else ''})" if fraction else "")


def _check_cell(row: dict, peer: str) -> str:
    c = row["checks"].get(peer)
    if not c:
        return "-"
    if "error" in c:
        return "check failed"
    text = f"{c['max_abs_diff']:.1e}"
    if c["differing"]:
        text += f", {100 * c['differing']:.3f}% differ"
    return text if c["agrees"] else f"**DISAGREES** ({text})"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    if not lines:
        return []
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in lines), ""]


def _config_section(config: dict, cells: Cells) -> list[str]:
    rows = config["rows"]
    peers = [p for p in ("torchvision", *RUNTIMES, "reference") if p in config["peers"]]
    start, end = config["copy_bandwidth_start"]["gbs"], config["copy_bandwidth_end"]["gbs"]
    fresh = config["fresh_tensor"]
    timings = [t for r in rows for t in r["impls"].values() if "median_ms" in t and t["repeats"] > 1]
    noisy = [t for t in timings if t["noisy"]]
    waits = [(t["cpu_wait"], sum(t["times_ms"])) for t in timings if t.get("cpu_wait") is not None]
    wait = sum(w * ms for w, ms in waits) / sum(ms for _, ms in waits) if waits and sum(ms for _, ms in waits) else None
    description = config["description"]
    lines = [f"## {description[:1].upper()}{description[1:]}", "",
             f"Copy bandwidth (dst.copy_(src), 2 x {config['copy_bandwidth_start']['mib']} MiB, read + write): "
             f"{start:.1f} GB/s at the start, {end:.1f} GB/s at the end. Allocating and filling a fresh "
             f"{fresh['mib']} MiB tensor: {_num(fresh['timing']['median_ms'])} ms. Load average "
             f"{(config['load_start'] or ['?'])[0]} at the start, {(config['load_end'] or ['?'])[0]} at the end "
             f"({config['machine']['usable_cores']} usable cores). {config['seconds']:.0f} s.", ""]
    warnings = []
    if noisy:
        warnings.append(f"{len(noisy)} of {len(timings)} timings have a spread above {NOISY_SPREAD:.0%} or waited for "
                        f"a CPU more than {CPU_WAIT_LIMIT:.0%} of the time (marked !): another process was running; "
                        "those medians are less certain.")
    if wait is not None and wait > CPU_WAIT_LIMIT:
        warnings.append(f"Over all timings, this process's threads waited for a CPU (runnable, not running) for "
                        f"{100 * wait:.0f}% of the timed time: other processes held the cores, and multi-threaded "
                        "times are too slow by up to a scheduler time slice per call.")
    # ratio(row, fewest threads, most threads) < 1: more threads took longer.
    slower = [r for r in rows if r["section"] == "threads"
              and (ratio(r, list(r["impls"])[0], list(r["impls"])[-1]) or 1) < 1]
    if slower:
        warnings.append(f"In {len(slower)} thread-scaling rows more threads were slower than one: the extra threads "
                        "waited for cores that other processes held. Rerun on a quiet machine (or compare at "
                        "--threads 1).")
    if max(start, end) > 1.2 * min(start, end):
        warnings.append("The copy bandwidth changed by more than 20% during the run: something else used memory "
                        "bandwidth.")
    load = config["load_start"]
    if load and load[0] > 0.5 * config["machine"]["usable_cores"]:
        warnings.append(f"The load average ({load[0]}) says other processes were running when this started.")
    cached = [r for r in rows if (r.get("copy_fraction") or 0) > 1]
    if cached:
        warnings.append(f"{len(cached)} rows exceed 100% of the copy bandwidth ('cache'): their data came from the "
                        "caches, not memory, so the fraction is no memory roofline there.")
    lines += [f"- {w}" for w in warnings] + ([""] if warnings else [])

    for dtype in ("float32", "bfloat16"):
        single = [r for r in rows if r["section"] == "single" and r["dtype"] == dtype]
        if not single:
            continue
        header = ["case", "layout", "pass", "RoIs", "roiops ms"]
        if dtype == "float32":
            header += [f"{NAMES[p]} ms" for p in peers] + ["roiops GB/s (of copy BW)", "NCHW / channels_last",
                                                           "max diff vs torchvision"]
        else:
            header += ["roiops float32 ms (bfloat16's speedup)"]
            header += [f"torchvision {_tv_dtype(single)} ms"] * ("torchvision" in peers)
            header += ["roiops GB/s (of copy BW)", "max diff vs torchvision"]
        table = []
        for r in single:
            line = [r["case"], r["layout"], r["direction"], str(r["rois"]), cells.time(r, "roiops")]
            if dtype == "float32":
                line += [cells.time(r, p, "roiops") for p in peers]
                line += [_bandwidth_cell(r), _layout_ratio(r, single), _check_cell(r, "torchvision")]
            else:
                twin = next((t for t in rows if t["section"] == "single" and t["dtype"] == "float32"
                             and _where(t) == _where(r).removesuffix(" bfloat16")), None)
                line.append(_ratio_cell(twin, r) if twin else "-")
                if "torchvision" in peers:
                    line.append(cells.time(r, "torchvision", "roiops"))
                line += [_bandwidth_cell(r), _check_cell(r, "torchvision")]
            table.append(line)
        lines += [f"### One feature map, {dtype}", ""] + _table(header, table)

    multilevel = [r for r in rows if r["section"] == "multilevel"]
    if multilevel:
        r0 = multilevel[0]
        per_level = ", ".join(map(str, r0["rois_per_level"]))
        lines += [f"### FPN P2-P5 ({r0['map']}, batch {r0['batch']}, C{r0['channels']}, {r0['rois']} RoIs (per "
                  f"level: {per_level}), {r0['output_size']}x{r0['output_size']}, sr {r0['sampling_ratio']}, "
                  "aligned=False): one fused call against one roiops call per level", ""]
        impls = ["roiops per level"] + ["torchvision MultiScaleRoIAlign"] * ("torchvision" in peers)
        lines += _table(["layout", "pass", "roiops fused ms", *(f"{i} ms" for i in impls), "fused GB/s (of copy BW)",
                         "fused vs per level: max diff"],
                        [[r["layout"], r["direction"], cells.time(r, "roiops fused"),
                          *(cells.time(r, i, "roiops fused") for i in impls), _bandwidth_cell(r),
                          _check_cell(r, "roiops per level")] for r in multilevel])

    threads = [r for r in rows if r["section"] == "threads"]
    if threads:
        labels = [k for k in threads[0]["impls"]]
        lines += ["### Thread scaling (float32)", ""]
        lines += _table(["case", "layout", "pass", *(f"{k} ms" for k in labels), "speedup"],
                        [[r["case"], r["layout"], r["direction"], *(cells.time(r, k) for k in labels),
                          f"{ratio(r, labels[0], labels[-1]):.2f}x" if ratio(r, labels[0], labels[-1]) else "-"]
                         for r in threads])
    for section, what in (("rois", "RoIs"), ("channels", "channels")):
        sweep = [r for r in rows if r["section"] == section]
        if not sweep:
            continue
        labels = [k for k in sweep[0]["impls"] if k != "torchvision"]
        tv = "torchvision" in sweep[0]["impls"]
        r0 = sweep[0]
        fixed = f"C{r0['channels']}" if section == "rois" else f"{r0['rois']} RoIs"
        lines += [f"### Time against {what} ({r0['op']} {r0['map']}, {fixed}, {r0['output_size']}x{r0['output_size']}, "
                  f"fwd, float32)", ""]
        lines += _table([what, "layout", *(f"{k} ms" for k in labels), *(["torchvision ms"] * tv),
                         "roiops GB/s (of copy BW)"],
                        [[str(r[section]), r["layout"], *(cells.time(r, k) for k in labels),
                          *([cells.time(r, "torchvision", labels[-1])] * tv), _bandwidth_cell(r)] for r in sweep])
    return lines


def _tv_dtype(rows: list[dict]) -> str:
    compared = {r["compared_dtype"].get("torchvision") for r in rows} - {None}
    return compared.pop() if len(compared) == 1 else rows[0]["dtype"]


def _layout_ratio(row: dict, rows: list[dict]) -> str:
    if row["layout"] != "NCHW":
        return ""
    twin = next((t for t in rows if t["case"] == row["case"] and t["direction"] == row["direction"]
                 and t["layout"] == "channels_last"), None)
    a, b = median(row["impls"].get("roiops")), median(twin["impls"].get("roiops")) if twin else None
    return f"{a / b:.2f}" if a and b else "-"


def _ratio_cell(float32_row: dict, bf16_row: dict) -> str:
    a, b = median(float32_row["impls"].get("roiops")), median(bf16_row["impls"].get("roiops"))
    return f"{_num(a)} ({a / b:.2f}x)" if a and b else "-"


def _target_lines(result: dict) -> list[str]:
    table = []
    for i, t in enumerate(result["targets"], 1):
        if t["met"] is None:
            verdict, worst, where, count = t["note"], "-", "-", "-"
        else:
            verdict = "met" if t["met"] else "**not met**"
            if t["unit"] == "of copy BW":
                worst = f"{100 * t['worst']:.0f}% (needs {100 * t['threshold']:.0f}%)"
                if t["worst"] > 1:
                    worst += ", above 100%: from cache"
            else:
                need = "at most" if t["unit"] == "x slower" else "needs"
                worst = f"{t['worst']:.2f}x ({need} {t['threshold']:g}x)"
            where, count = t["where"], f"{t['rows_met']} of {t['rows']}"
        table.append([str(i), t["target"], t["setting"], worst, where, count, verdict])
    caveats = []
    if result["quick"]:
        caveats.append("This is a --quick run (an eighth of the channels and RoIs, few repeats): the targets are set "
                       "for the full cases, so these verdicts are indicative only.")
    if result["threads"] != 2:
        caveats.append(f"The targets are for 2 threads; this run used {result['threads']}.")
    if result["device"] != "cpu":
        caveats.append("The targets are CPU targets; on a GPU they are shown for orientation only.")
    return ["## Speed targets", "",
            "Judged on every non-edge case in the setting named (edge cases time mostly call overhead and are shown "
            "but not judged); 'worst' is the row furthest from its threshold.", "",
            *(f"- {c}" for c in caveats), *([""] if caveats else []),
            *_table(["#", "target", "allocator", "worst measured", "where", "rows meeting it", "verdict"], table)]


def _machine_line(result: dict) -> str:
    m = result["machine"]
    caches = ", ".join(f"{k} {v}" for k, v in m["caches"].items())
    gpu = f"; GPU {m['gpu']}" if m.get("gpu") else ""
    peers = ", ".join(f"{NAMES.get(k, k)} {v}" for k, v in result["peers"].items()) or "none"
    return (f"roiops {m['roiops']} (CPU kernels: {m['cpu_capability']}) on {m['cpu']}, {m['cores']} cores "
            f"({m['usable_cores']} usable){', ' + caches if caches else ''}, {m['memory']} memory{gpu}; "
            f"torch {m['torch']} with {m['threads']} threads, Python {m['python']}, {m['system']}. "
            f"Compared with: {peers}.")


def markdown(result: dict) -> str:
    cells = Cells()
    body = []
    for config in result["configs"]:
        body += _config_section(config, cells)
    notes = sorted({n for c in result["configs"] for n in c["notes"]}) + result["notes"] + result["failures"]
    lines = [f"# roiops benchmark ({result['device']}{', --quick' if result['quick'] else ''})", "",
             _machine_line(result), "",
             f"`{result['command']}`, {result['date']}, {result['seconds']:.0f} s.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += _target_lines(result)
    lines += ["## Reading the tables", "",
              "- Times are medians of repeats after a warm-up, in ms; ±x% is the interquartile spread over the "
              f"median, and ! marks a spread above {NOISY_SPREAD:.0%} or threads that waited for a CPU more than "
              f"{CPU_WAIT_LIMIT:.0%} of the timed time (Linux schedstat): another process interfered. "
              "(Nx) is how many times faster roiops is. Every implementation of a row runs on the same inputs, in "
              "the same process, one after the other.",
              "- roiops GB/s counts the bytes it must move at least: the output and the map pixels the boxes cover "
              "(forward), plus reading the output gradient and writing the input gradient once (backward); the "
              "percentage is of this run's copy bandwidth. Above 100% ('cache') the data came from the caches.",
              "- ONNX Runtime and OpenVINO run the one-node ONNX RoiAlign (opset 16, avg, half_pixel for "
              "aligned=True, output_half_pixel otherwise) on NCHW float32 with I/O bound once; their time is the "
              "same in both layouts' rows. They are timed only if their output matches torchvision's to 1e-5.",
              "- max diff vs torchvision: roiops computes sample positions in float64, torchvision in float32, so "
              "roi_align outputs differ by up to about 1e-4 (the tolerance, grown in proportion for boxes reaching "
              "beyond 500 map pixels, where float32 positions err more; bfloat16: two ulps); roi_pool differs "
              "where torchvision's float32 bin arithmetic adds a row (README, 0.01-0.1% of outputs). "
              "torchvision's CPU kernels have no bfloat16: the bfloat16 rows compare with its float32 on the same "
              "values.",
              "- The reference (roiops.reference, pure PyTorch) runs once, where it fits in memory.", ""]
    lines += body
    if cells.errors:
        lines += ["## Errors", "", *(f"{i}. {e}" for i, e in enumerate(cells.errors, 1)), ""]
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def speedup_figure(result: dict, path: Path) -> bool:
    """Bars of roiops' speedup per case (float32) over each peer, one panel per
    allocator setting, with the targets as lines; the fused multilevel op beside."""
    configs = [c for c in result["configs"] if any(r["section"] == "single" for r in c["rows"])]
    if not configs:
        return False
    plt = _pyplot()
    series = [("torchvision", "fwd", "torchvision fwd"), ("torchvision", "fwd+bwd", "torchvision fwd+bwd"),
              ("onnxruntime", "fwd", "ONNX Runtime fwd"), ("openvino", "fwd", "OpenVINO fwd")]
    fig, axes = plt.subplots(len(configs), 2, figsize=(16, 4.5 * len(configs)), squeeze=False,
                             gridspec_kw={"width_ratios": [5, 1]})
    for (ax, ax_ml), config in zip(axes, configs, strict=True):
        single = [r for r in config["rows"] if r["section"] == "single" and r["dtype"] == "float32"]
        keys = list(dict.fromkeys((r["case"], r["layout"]) for r in single))
        width = 0.8 / len(series)
        for i, (peer, direction, label) in enumerate(series):
            values = [next((ratio(r, peer) for r in single if (r["case"], r["layout"]) == k
                            and r["direction"] == direction), None) or 0 for k in keys]
            if any(values):
                ax.bar([j + (i - 1.5) * width for j in range(len(keys))], values, width, label=label)
        if config["allocator"] in TV_TARGET and result["device"] == "cpu":
            ax.axhline(TV_TARGET[config["allocator"]], color="k", ls="--", lw=1, label="torchvision target")
            ax.axhline(RUNTIME_TARGET, color="grey", ls=":", lw=1, label="runtime target")
        ax.axhline(1, color="k", lw=0.5)
        ax.set_yscale("log")
        ax.set_xticks(range(len(keys)), [f"{c}\n{'CL' if lay == 'channels_last' else lay}" for c, lay in keys],
                      fontsize=6, rotation=90)
        ax.set_ylabel("roiops speedup (x)")
        ax.set_title(f"{config['description']}", fontsize=9)
        ax.legend(fontsize=7, ncol=3)
        multilevel = [r for r in config["rows"] if r["section"] == "multilevel"]
        labels = [f"{'CL' if r['layout'] == 'channels_last' else r['layout']}\n{r['direction']}" for r in multilevel]
        ax_ml.bar(range(len(multilevel)), [ratio(r, "roiops per level", "roiops fused") or 0 for r in multilevel])
        ax_ml.axhline(MULTILEVEL_TARGET, color="k", ls="--", lw=1)
        ax_ml.set_xticks(range(len(multilevel)), labels, fontsize=7)
        ax_ml.set_title("FPN: fused vs per level", fontsize=9)
    fig.suptitle(_machine_line(result)[:160], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def scaling_figure(result: dict, path: Path) -> bool:
    """Time against RoIs and against channels (log-log), roiops per layout and thread
    count and torchvision, from the first setting's sweeps."""
    rows = [r for c in result["configs"][:1] for r in c["rows"] if r["section"] in ("rois", "channels")]
    if not rows:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, section in zip(axes, ("rois", "channels"), strict=True):
        sweep = [r for r in rows if r["section"] == section]
        impls = list(dict.fromkeys(k for r in sweep for k in r["impls"]))
        # One colour per implementation, one line style per layout.
        for layout in ("NCHW", "channels_last"):
            mine = [r for r in sweep if r["layout"] == layout]
            for i, impl in enumerate(impls):
                points = [(r[section], median(r["impls"].get(impl))) for r in mine]
                points = [(x, y) for x, y in points if y]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", color=f"C{i}",
                            ls="-" if layout == "NCHW" else "--", label=f"{impl}, {layout}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("RoIs" if section == "rois" else "channels")
        ax.set_ylabel("forward ms (median)")
        ax.set_title(f"time against {'RoIs' if section == 'rois' else 'channels'}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict, out: Path, stem: str) -> tuple[str, list[Path]]:
    """Judges the targets, writes ``stem``.json, .md and the PNGs into ``out``; returns the
    markdown and the paths written. Without matplotlib the PNGs are skipped with a note."""
    out.mkdir(parents=True, exist_ok=True)
    result["targets"] = targets(result)
    figures: list[tuple[Path, Callable[[dict, Path], bool]]] = [
        (out / f"{stem}-speedup.png", speedup_figure), (out / f"{stem}-rois.png", scaling_figure)]
    written = []
    try:
        _pyplot()
    except ImportError as error:
        result["notes"].append(f"matplotlib does not import ({error}): no figures; `pip install matplotlib`")
        figures = []
    for path, draw in figures:
        if draw(result, path):
            written.append(path)
    text = markdown(result)
    (out / f"{stem}.md").write_text(text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    return text, [out / f"{stem}.json", out / f"{stem}.md", *written]
