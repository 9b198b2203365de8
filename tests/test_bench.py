"""python -m roiops.bench: a --quick run end to end on a few cases (JSON, markdown and
figures written, a missing optional peer skipped with a note), and the pieces its
verdicts rest on. No test looks at a time: the machine running them is shared."""

import json
import os
import subprocess
import sys

import pytest
import torch

import roiops
from roiops.bench import __main__ as cli
from roiops.bench import peers, report
from roiops.bench.cases import CASES, Case, pixels_read, problem, turned
from roiops.bench.suite import TOLERANCE, torchvision_tolerance
from roiops.bench.timing import summarize


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run of a reduced case set under both allocator settings, with
    openvino made unimportable (a package on PYTHONPATH that raises ImportError), as on
    a machine where it is not installed."""
    tmp = tmp_path_factory.mktemp("bench")
    fake = tmp / "fakes" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: openvino is not installed')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")])))
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "roiops.bench", "--quick", "--no-progress", "--out", str(out),
         "--cases", "box-50x84,roipool-50x84,edge-empty,multilevel,scaling"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_quick_writes_json_markdown_and_figures(quick_run):
    out, stdout = quick_run
    result = json.loads((out / "cpu-bench.json").read_text())
    assert result["quick"] and result["device"] == "cpu" and result["threads"] == 2
    assert {"cpu", "cores", "cpu_capability", "torch", "roiops"} <= set(result["machine"])
    assert [c["allocator"] for c in result["configs"]] == ["mapped", "default"]
    assert result["configs"][0]["allocator_env"]["MALLOC_MMAP_THRESHOLD_"] == "4294967296"
    assert result["configs"][1]["allocator_env"]["MALLOC_MMAP_THRESHOLD_"] is None
    assert not result["failures"]
    for config in result["configs"]:
        assert config["copy_bandwidth_start"]["gbs"] > 0
        assert not [n for n in config["notes"] if "failed" in n], config["notes"]
        sections = {r["section"] for r in config["rows"]}
        # The sweeps run once, under the first setting.
        assert sections == ({"single", "multilevel", "threads", "rois", "channels"}
                            if config["allocator"] == "mapped" else {"single", "multilevel"})
        for row in config["rows"]:
            assert row["direction"] in ("fwd", "fwd+bwd") and row["layout"] in ("NCHW", "channels_last")
            for name, timing in row["impls"].items():
                assert "error" not in timing, (row["case"], name, timing)
                assert timing["median_ms"] >= 0 and timing["repeats"] >= 1 and "spread" in timing
        single = [r for r in config["rows"] if r["section"] == "single"]
        assert {r["dtype"] for r in single} == {"float32", "bfloat16"}
        assert {(r["case"], r["layout"], r["direction"]) for r in single} == {
            (c, lay, d) for c in ("box-50x84", "roipool-50x84", "edge-empty")
            for lay in ("NCHW", "channels_last") for d in ("fwd", "fwd+bwd")}
        for r in single:
            if r["direction"] == "fwd" and "torchvision" in r["checks"]:
                assert r["checks"]["torchvision"]["agrees"], r
        multilevel = [r for r in config["rows"] if r["section"] == "multilevel"]
        assert len(multilevel) == 4 and all(r["checks"]["roiops per level"]["agrees"] for r in multilevel
                                            if r["direction"] == "fwd")
    assert len(result["targets"]) == 7
    for target in result["targets"]:
        assert {"target", "setting", "met", "worst", "where", "rows", "rows_met"} <= set(target)
    text = (out / "cpu-bench.md").read_text()
    assert "## Speed targets" in text and "### One feature map, float32" in text and "--quick" in text
    assert text.strip() in stdout
    for png in ("cpu-bench-speedup.png", "cpu-bench-rois.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_missing_peer_is_skipped_with_a_note(quick_run):
    out, _ = quick_run
    result = json.loads((out / "cpu-bench.json").read_text())
    assert "openvino" not in result["peers"]
    for config in result["configs"]:
        assert any(n.startswith("openvino skipped") and "simulated" in n for n in config["notes"])
        assert not any("openvino" in r["impls"] for r in config["rows"])
    assert "openvino skipped" in (out / "cpu-bench.md").read_text()


def test_unknown_names_are_refused(capsys):
    for argv in (["--peers", "tensorrt"], ["--cases", "no-such-case"], ["--allocators", "jemalloc"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
    assert "choose from" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_device_says_so(capsys, tmp_path):
    assert cli.main(["--device", "cuda", "--out", str(tmp_path)]) != 0
    assert "no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_spread_and_cpu_wait_flag_interference():
    assert not summarize([10.0, 10.1, 10.2, 9.9, 10.0], cpu_wait=0.0)["noisy"]
    assert summarize([10.0, 14.0, 10.2, 19.0, 10.0])["noisy"]  # a wide spread
    steady_but_waiting = summarize([8.0, 8.0, 8.0], cpu_wait=0.9)
    assert steady_but_waiting["spread"] == 0 and steady_but_waiting["noisy"]


def test_pixels_read_is_the_union_of_the_footprints():
    rois = torch.tensor([[0, 0, 0, 3, 3], [0, 2, 2, 5, 5], [1, 100, 100, 200, 200]], dtype=torch.float32)
    # Box 0 covers pixels 0..4 per axis (with the bilinear neighbour), box 1 covers
    # 2..6; their union is 5*5 + 5*5 - 3*3; box 2 is off the 8x8 map of image 1.
    assert pixels_read(rois, (2, 3, 8, 8), 1.0, "roi_align", False) == 41
    assert pixels_read(rois[:0], (2, 3, 8, 8), 1.0, "roi_align", False) == 0


def test_roi_align_tolerance_grows_with_how_far_the_boxes_reach():
    case = next(c for c in CASES if c.name == "box-50x84")  # scale 1/16
    near = torch.tensor([[0, 10.0, 10.0, 1000.0, 600.0]])
    far = torch.tensor([[0, -16000.0, 10.0, 800.0, 600.0]])  # 1000 map pixels from 0
    atol, rtol = TOLERANCE[torch.float32]
    assert torchvision_tolerance(case, near, torch.float32) == (atol, rtol)
    assert torchvision_tolerance(case, far, torch.float32) == (2 * atol, rtol)
    pool = next(c for c in CASES if c.op == "roi_pool")
    assert torchvision_tolerance(pool, far, torch.float32) == (atol, rtol)


def test_targets_judge_every_row_against_its_threshold():
    def row(case, op, direction, ours, theirs, layout="NCHW"):
        return dict(section="single", case=case, op=op, edge=False, dtype="float32", layout=layout,
                    direction=direction, impls={"roiops": {"median_ms": ours}, "torchvision": {"median_ms": theirs}},
                    checks={})

    rows = [row("a", "roi_align", "fwd", 1.0, 12.0), row("b", "roi_pool", "fwd+bwd", 1.0, 6.0)]
    result = dict(configs=[dict(allocator="mapped", rows=rows)])
    first = report.targets(result)[0]
    # roi_pool's backward needs 5x only: both rows meet their targets.
    assert first["met"] and first["rows_met"] == 2 and first["setting"] == "mapped"
    rows.append(row("c", "roi_align", "fwd+bwd", 1.0, 9.0))
    first = report.targets(result)[0]
    assert first["met"] is False and first["where"] == "c NCHW fwd+bwd" and first["worst"] == 9.0
    # Nothing measured under the default setting: no verdict rather than a pass.
    assert report.targets(result)[1]["met"] is None


def test_quick_cases_keep_their_shapes():
    for case in CASES:
        small = case.quick()
        assert isinstance(small, Case) and (small.height, small.width, small.size) == (case.height, case.width,
                                                                                        case.size)
        assert small.rois <= case.rois and small.channels <= case.channels
        assert small.output_channels * (small.size**2 if case.op.startswith("ps_") else 1) == small.channels


def test_compare_matches_rows_across_runs(tmp_path, capsys):
    from roiops.bench import compare

    def run(variant, ms):
        row = dict(section="single", case="box-50x84", dtype="float32", layout="NCHW", direction="fwd",
                   impls={"roiops": {"median_ms": ms}})
        other = dict(row, case="only-here")
        path = tmp_path / f"{variant}.json"
        rows = [row, other] if variant == "avx2" else [row]
        path.write_text(json.dumps(dict(machine={"cpu_capability": variant},
                                        configs=[dict(allocator="mapped", rows=rows)])))
        return path

    assert compare.main([str(run("default", 10.0)), str(run("avx2", 5.0))]) == 0
    text = capsys.readouterr().out
    assert "| box-50x84 | float32 | NCHW | fwd | mapped | 10.00 | 5.00 | 0.50 |" in text
    assert "only-here" not in text  # rows only some runs have are left out
    assert "avx2 / default: median 0.50" in text
    # Repeats of one run, comma-separated: the median of their times.
    repeats = ",".join(str(run(f"default{i}", ms).rename(tmp_path / f"r{i}.json")) for i, ms in enumerate((9, 30, 12)))
    assert compare.main([repeats, str(run("avx2", 6.0)), "--labels", "old,new"]) == 0
    assert "| mapped | 12.00 | 6.00 | 0.50 |" in capsys.readouterr().out


def test_prroi_pool_baseline_computes_prroi_pool():
    """The benchmark's pure-PyTorch prroi_pool (bench/peers.py) is the op, in chunks of RoIs."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 12, 15, generator=gen)
    rois = roiops.testing.random_rois(9, 2, (48, 60), min_size=1, generator=gen)
    got = peers.prroi_pool_torch(x, rois, 3, 0.25, chunk=4)
    torch.testing.assert_close(got, roiops.prroi_pool(x, rois, 3, 0.25), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_rotated_baseline_computes_roi_align_rotated(aligned):
    """The benchmark's grid_sample roi_align_rotated (bench/peers.py) is the op where no
    sample lies within a pixel outside the map (boxes well inside it), in chunks of RoIs;
    the rotated row's boxes are turned and its roofline counts their enclosing boxes."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 30, 36, generator=gen)
    rois = roiops.testing.random_rois(9, 2, (40, 48), min_size=8, generator=gen)
    rois[:, 1:] += torch.tensor([40.0, 40.0, 40.0, 40.0])  # centred in the 120 x 144 image
    rotated = turned(rois, gen)
    got = peers.roi_align_rotated_torch(x, rotated, 3, 0.25, 2, aligned, chunk=4)
    torch.testing.assert_close(got, roiops.roi_align_rotated(x, rotated, 3, 0.25, 2, aligned), atol=1e-5, rtol=1e-5)
    case = next(c for c in CASES if c.op == "roi_align_rotated").quick()
    x, rois = problem(case)
    assert rois.shape == (case.rois, 6) and rois[:, 5].abs().max() > 10
    assert 0 < pixels_read(rois, tuple(x.shape), case.scale, case.op, case.aligned) <= 50 * 84


@pytest.mark.parametrize("name", ["rfcn-ps-align", "rfcn-ps-pool"])
def test_position_sensitive_rows_call_torchvision_and_roiops_alike(name):
    """The R-FCN rows pass their arguments to torchvision's op and to roiops' in the same
    order (bench/peers.py: op_of): the outputs agree on the quick problem."""
    torchvision = pytest.importorskip("torchvision")
    case = next(c for c in CASES if c.name == name).quick()
    x, rois = problem(case)
    ours = peers.roiops_op(case)(x, rois)
    assert ours.shape == (case.rois, case.output_channels, case.size, case.size)
    theirs = peers.op_of(torchvision.ops, case)(x, rois)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-5)
