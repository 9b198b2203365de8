"""python -m roiops.ablation end to end on a tiny synthetic set: results JSON in the
documented schema, markdown, plots, per-run results that a rerun reuses, and --data
on a COCO-format folder."""

import json

import pytest

pytest.importorskip("torchvision", reason="needs torchvision: pip install roiops[models]")
pytest.importorskip("pycocotools", reason="needs pycocotools: pip install roiops[models]")
pytest.importorskip("matplotlib", reason="needs matplotlib: pip install roiops[models]")

from roiops.ablation import runner  # noqa: E402
from roiops.ablation.__main__ import main  # noqa: E402
from roiops.data import synthetic_dataset  # noqa: E402

# Every test here trains models end to end.
pytestmark = pytest.mark.slow

ROW_KEYS = {"layer", "agg", "bilinear", "aligned", "stride", "mask_ap", "mask_ap50", "mask_ap75", "box_ap",
            "mask_ap_std", "mask_ap50_std", "mask_ap75_std", "box_ap_std", "seeds"}


def test_quick_ablation_end_to_end_and_resume(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--quick", "--no-progress", "--iterations", "4", "--cache", str(cache), "--out", str(out),
            "--json", str(tmp_path / "copy.json")]
    main(args)
    table = json.loads((out / "ablation-quick.json").read_text())
    assert json.loads((tmp_path / "copy.json").read_text()) == table
    assert [(r["name"], r["stride"]) for r in table["rows"]] == list(runner.QUICK_ROWS)
    for row in table["rows"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert 0 <= row["mask_ap"] <= 100 and row["seeds"] == [0]
    for name in ("ablation-quick.md", "ablation-quick.png", "ablation-quick-masks.png"):
        assert (out / name).stat().st_size > 0
    runs = sorted((out / "ablation-runs-quick").glob("*.json"))
    assert len(runs) == 2
    stamps = [p.stat().st_mtime_ns for p in runs]
    main(args)  # every run finished: read back, not retrained
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert json.loads((out / "ablation-quick.json").read_text())["rows"] == table["rows"]
    # --runs: aggregate the same finished runs into another folder, nothing retrained.
    other = tmp_path / "other"
    main([*args[:6], "--out", str(other), "--runs", str(out / "ablation-runs-quick")])
    assert json.loads((other / "ablation-quick.json").read_text())["rows"] == table["rows"]
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    # A cleared checkpoint cache (another machine): the mask figure's runs are
    # retrained instead of crashing on the missing file; recorded results are kept.
    for checkpoint in (cache / "checkpoints-quick").glob("*.pt"):
        checkpoint.unlink()
    (out / "ablation-quick-masks.png").unlink()
    main(args)
    assert (out / "ablation-quick-masks.png").stat().st_size > 0
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert json.loads((out / "ablation-quick.json").read_text())["rows"] == table["rows"]


def test_data_option_reads_any_coco_folder(tmp_path):
    train, val = synthetic_dataset(tmp_path / "mydata", seed=5, train_images=12, val_images=4, progress=False)
    assert (train.name, val.name) == ("train", "val")
    main(["--quick", "--no-progress", "--iterations", "2", "--jobs", "1", "--data", str(tmp_path / "mydata"),
          "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    result = json.loads(next((tmp_path / "out" / "ablation-runs-quick").glob("*.json")).read_text())
    assert result["identity"]["data"].endswith("mydata/train")
