"""ONNX export with both of torch.onnx's exporters (TorchScript-based with the symbolic
functions `import roiops` registers; torch.export-based with
roiops.onnx.translation_table()); the exported graphs run in onnxruntime with roiops'
outputs, for every op variant, the fused multilevel ops and a small detector head, on
other boxes than the ones exported with (incl. boxes across the border and non-finite
boxes, which pool to 0)."""

import io
import warnings

import pytest
import torch

import roiops

pytest.importorskip("onnx", reason="ONNX export tests need the onnx extra: pip install roiops[onnx]")
pytest.importorskip("onnxscript", reason="ONNX export tests need the onnx extra: pip install roiops[onnx]")
ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need the onnx extra: pip install roiops[onnx]")

torch.manual_seed(0)
X = torch.randn(2, 3, 16, 20)
EXPORT_ROIS = torch.tensor([[0, 1.0, 1.0, 9.0, 7.0], [1, 2.0, 3.0, 30.0, 20.0], [1, 0.5, 0.5, 4.0, 4.0],
                            [0, 3.0, 2.0, 12.0, 14.0], [1, 6.0, 1.0, 20.0, 9.0], [0, 8.0, 8.0, 16.0, 16.0],
                            [1, 2.0, 2.0, 6.0, 6.0]])
# The graphs run with other box values than they were exported with: inside, across the
# border, inverted, sub-pixel, on rounding ties at scale 0.5, non-finite (pooled to 0).
RUN_ROIS = torch.tensor([
    [0, 1.37, 2.23, 15.71, 12.13],
    [1, -3.3, 4.2, 30.1, 28.4],
    [0, 20.0, 18.0, 6.0, 2.5],
    [0, 10.25, 11.75, 10.5, 12.0],
    [1, 1.0, 3.0, 15.0, 13.0],
    [1, float("nan"), 1.0, 5.0, 5.0],
    [1, 3.0, 3.0, float("inf"), 8.0],
])
EXPORTERS = ["torchscript", "dynamo"]


class Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def export(module, args, exporter):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, onnxscript's notes
        if exporter == "dynamo":
            program = torch.onnx.export(module, args, dynamo=True, verbose=False,
                                        custom_translation_table=roiops.onnx.translation_table())
            return program.model_proto.SerializeToString()
        f = io.BytesIO()
        torch.onnx.export(module, args, f, dynamo=False, opset_version=17)
        return f.getvalue()


def run(model, args):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
    return torch.from_numpy(session.run(None, dict(zip(names, [t.numpy() for t in flat], strict=True)))[0])


def check(fn, export_args, run_args, exporter, atol=2e-6):
    module = Call(fn)
    got = run(export(module, export_args, exporter), run_args)
    torch.testing.assert_close(got, module(*run_args), rtol=1e-5, atol=atol)


VARIANTS = {
    "align-avg-aligned": lambda x, r: roiops.roi_align(x, r, 3, 0.5, 2, True),
    "align-avg-adaptive": lambda x, r: roiops.roi_align(x, r, (3, 2), 0.5, -1, False),
    "align-max": lambda x, r: roiops.roi_align(x, r, 3, 0.5, 2, True, "max"),
    "align-max-unaligned": lambda x, r: roiops.roi_align(x, r, (2, 3), 0.25, 3, False, "max"),
    "align-avg-nearest": lambda x, r: roiops.roi_align(x, r, 3, 0.5, 2, False, "avg", "nearest"),
    "align-max-nearest": lambda x, r: roiops.roi_align(x, r, 3, 0.5, 2, True, "max", "nearest"),
    "warp-avg": lambda x, r: roiops.roi_warp(x, r, 3, 0.5, 2, "avg"),
    "warp-avg-adaptive": lambda x, r: roiops.roi_warp(x, r, 3, 0.5, -1, "avg"),
    "warp-max": lambda x, r: roiops.roi_warp(x, r, 3, 0.5, 2, "max"),
    "warp-avg-nearest": lambda x, r: roiops.roi_warp(x, r, (2, 3), 0.5, 1, "avg", "nearest"),
    "pool-max": lambda x, r: roiops.roi_pool(x, r, 3, 0.5),
    "pool-avg": lambda x, r: roiops.roi_pool(x, r, (3, 2), 0.5, "avg"),
}


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_runs_in_onnxruntime(name, exporter):
    check(VARIANTS[name], (X, EXPORT_ROIS), (X, RUN_ROIS), exporter)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["align-max", "warp-avg-nearest", "pool-avg"])
def test_float64_decompositions(name, exporter):
    x = X.double()
    check(VARIANTS[name], (x, EXPORT_ROIS.double()), (x, RUN_ROIS.double()), exporter, atol=1e-12)


def test_roi_align_avg_is_onnx_roialign_and_max_is_not():
    import onnx

    ops = {}
    for name in ("align-avg-aligned", "align-max"):
        model = onnx.load_from_string(export(Call(VARIANTS[name]), (X, EXPORT_ROIS), "dynamo"))
        ops[name] = {n.op_type for n in model.graph.node} | {n.op_type for f in model.functions for n in f.node}
    assert "RoiAlign" in ops["align-avg-aligned"]
    assert "RoiAlign" not in ops["align-max"] and "ReduceMax" in ops["align-max"]


def assert_export_refused(fn, exporter, message):
    """Exporting fn fails, and some exception in the chain (exporters wrap ours) says
    `message`."""
    with pytest.raises(Exception) as info:
        export(Call(fn), (X, EXPORT_ROIS), exporter)
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(message in m for m in chain), chain


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_adaptive_max_is_a_clear_error(exporter):
    fn = lambda x, r: roiops.roi_align(x, r, 3, 0.5, -1, True, "max")  # noqa: E731
    assert_export_refused(fn, exporter, "roi_align mode='max' sampling='bilinear' sampling_ratio=0 has no ONNX "
                                        "translation")


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["ps_roi_align", "ps_roi_pool"])
def test_position_sensitive_ops_are_a_clear_error(name, exporter):
    fn = lambda x, r: getattr(roiops, name)(x, r, (1, 3), 0.5)  # noqa: E731  (X's 3 channels: one per bin)
    assert_export_refused(fn, exporter, f"roiops.onnx: {name} has no ONNX translation")


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_prroi_pool_is_a_clear_error(exporter):
    fn = lambda x, r: roiops.prroi_pool(x, r, (2, 3), 0.5)  # noqa: E731
    assert_export_refused(fn, exporter, "roiops.onnx: prroi_pool has no ONNX translation")


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_roi_align_rotated_is_a_clear_error(exporter):
    def fn(x, r):  # the boxes' four values read as (cx, cy, w, h), turned by 30 degrees
        return roiops.roi_align_rotated(x, torch.cat([r, torch.full_like(r[:, :1], 30.0)], 1), (2, 3), 0.5, 2)

    assert_export_refused(fn, exporter, "roiops.onnx: roi_align_rotated has no ONNX translation")


POOLERS = {
    "align": roiops.MultiScaleRoIPooler(3, [0.5, 0.25], sampling_ratio=2, canonical_size=16),
    "warp-max": roiops.MultiScaleRoIPooler(3, [0.5, 0.25], "roi_warp", 2, canonical_size=16),
    "pool-max": roiops.MultiScaleRoIPooler((2, 3), [0.5, 0.25], "roi_pool", canonical_size=16),
}


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(POOLERS))
def test_multilevel(name, exporter):
    levels = [X, X[:, :, ::2, ::2].contiguous()]
    check(POOLERS[name], (levels, EXPORT_ROIS), (levels, RUN_ROIS), exporter)


class TinyDetectorHead(torch.nn.Module):
    """A two-level FPN-like backbone, roiops.MultiScaleRoIAlign and a box head."""

    def __init__(self):
        super().__init__()
        self.c2 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c3 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.pool = roiops.MultiScaleRoIAlign(["p2", "p3"], 4, 2)
        self.head = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, images, boxes0, boxes1):
        p2 = torch.relu(self.c2(images))
        p3 = torch.relu(self.c3(p2))
        pooled = self.pool({"p2": p2, "p3": p3}, [boxes0, boxes1], [(64, 64)])
        return self.head(pooled.flatten(1))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_small_detector(exporter):
    torch.manual_seed(1)
    model = TinyDetectorHead().eval()
    images = torch.randn(2, 3, 64, 64)
    boxes = [torch.tensor([[2.0, 3.0, 40.0, 50.0], [10.0, 10.0, 20.0, 30.0]]),
             torch.tensor([[0.0, 0.0, 63.0, 63.0], [30.5, 5.5, 60.25, 33.0]])]
    other = [torch.tensor([[5.0, 1.0, 62.0, 40.0], [1.0, 1.0, 9.0, 9.0]]),
             torch.tensor([[12.0, 20.0, 50.0, 60.0], [-4.0, 2.0, 20.0, 70.0]])]
    with torch.no_grad():
        model(images, *boxes)  # the level scales are fixed on the first call
        check(model, (images, *boxes), (images, *other), exporter, atol=1e-5)


class XBoxes(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, boxes):
        return self.fn(x, boxes)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["align-avg-aligned", "align-max", "pool-max", "pool-avg"])
def test_number_of_boxes_is_dynamic(name, exporter):
    module = XBoxes(VARIANTS[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            model = torch.onnx.export(
                module, (X, EXPORT_ROIS), dynamo=True, verbose=False,
                dynamic_shapes={"x": None, "boxes": {0: torch.export.Dim("K")}},
                custom_translation_table=roiops.onnx.translation_table(),
            ).model_proto.SerializeToString()
        else:
            f = io.BytesIO()
            torch.onnx.export(module, (X, EXPORT_ROIS), f, dynamo=False, input_names=["x", "boxes"],
                              dynamic_axes={"boxes": {0: "K"}})
            model = f.getvalue()
    for rois in (RUN_ROIS[:2], torch.cat([RUN_ROIS, RUN_ROIS[:3]])):
        torch.testing.assert_close(run(model, (X, rois)), module(X, rois), rtol=1e-5, atol=2e-6)
