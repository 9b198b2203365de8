"""TorchScript: the functions and every module script (and survive save/load) with the
results of eager mode; torch.jit.trace records them without a TracerWarning, and the
trace generalises to other boxes."""

import io
import os
import warnings

import pytest
import torch

import roiops

torch.manual_seed(0)
X = torch.randn(2, 3, 16, 20)
ROIS = torch.tensor([[0, 1.37, 2.23, 15.71, 12.13], [1, -3.3, 4.2, 30.1, 28.4], [1, 9.6, 1.1, 21.7, 17.2]])
OTHER_ROIS = torch.tensor([[1, 0.5, 0.5, 9.0, 7.0], [0, 3.0, 2.0, 38.0, 30.0]])
LEVELS = [X, X[:, :, ::2, ::2].contiguous()]
# roiops' own files: a warning raised from here is ours (a path merely containing "roiops",
# such as a venv named after the project that holds torch, is not).
ROIOPS_DIR = os.path.join(os.path.dirname(os.path.abspath(roiops.__file__)), "")


def as_list(rois):
    return [rois[rois[:, 0] == i, 1:] for i in range(2)]


def rotated(rois):
    """The boxes as roi_align_rotated's (batch, cx, cy, w, h, angle), turned 30 degrees more per row."""
    angle = 30.0 * torch.arange(rois.shape[0], dtype=rois.dtype)[:, None]
    return torch.cat([rois[:, :1], (rois[:, 1:3] + rois[:, 3:5]) / 2, rois[:, 3:5] - rois[:, 1:3], angle], 1)


def scripted(obj):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch itself
        return torch.jit.script(obj)


def save_load(module):
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


FUNCTIONS = {
    "roi_align": (roiops.roi_align, [((3, 2), 0.5, 2, True, "max", "nearest"), (3,)]),
    "roi_warp": (roiops.roi_warp, [(3, 0.5, -1, "avg", "bilinear"), ((2, 3),)]),
    "roi_pool": (roiops.roi_pool, [(3, 0.5, "avg"), ((3, 2), 0.5)]),
    # X's 3 channels are one per bin of a 1 x 3 or 3 x 1 output.
    "ps_roi_align": (roiops.ps_roi_align, [((1, 3), 0.5, 2), ((3, 1),)]),
    "ps_roi_pool": (roiops.ps_roi_pool, [((3, 1), 0.5), ((1, 3),)]),
    "prroi_pool": (roiops.prroi_pool, [((3, 2), 0.5), (3,)]),
    "roi_align_rotated": (roiops.roi_align_rotated, [((3, 2), 0.5, 2, False, True), (3,)]),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functions_script(name):
    fn, arg_sets = FUNCTIONS[name]
    script = scripted(fn)
    rois = rotated(ROIS) if name == "roi_align_rotated" else ROIS
    for args in arg_sets:
        for boxes in (rois, as_list(rois)):
            torch.testing.assert_close(script(X, boxes, *args), fn(X, boxes, *args), rtol=0, atol=0)


def test_scripted_function_reports_bad_values():
    script = scripted(roiops.roi_align)
    with pytest.raises(Exception, match="mode must be 'avg' or 'max'"):
        script(X, ROIS, 3, 0.5, 2, False, "mean")
    with pytest.raises(Exception, match=r"boxes\[1\] must be a \[L, 4\] Tensor"):
        script(X, [ROIS[:1, 1:], ROIS[1:]], 3)


def multiscale_align():
    return roiops.MultiScaleRoIAlign(["p2", "p3"], 3, 2)


MODULES = {
    "RoIAlign": (lambda: roiops.RoIAlign(3, 0.5, 2, True, "max"), lambda m, r: m(X, r)),
    "RoIWarp": (lambda: roiops.RoIWarp((2, 3), 0.5, 2, "avg", "nearest"), lambda m, r: m(X, r)),
    "RoIPool": (lambda: roiops.RoIPool(3, 0.5), lambda m, r: m(X, as_list(r))),
    "PSRoIAlign": (lambda: roiops.PSRoIAlign((1, 3), 0.5, 2), lambda m, r: m(X, r)),
    "PSRoIPool": (lambda: roiops.PSRoIPool((3, 1), 0.5), lambda m, r: m(X, as_list(r))),
    "PrRoIPool": (lambda: roiops.PrRoIPool((2, 3), 0.5), lambda m, r: m(X, as_list(r))),
    "RoIAlignRotated": (lambda: roiops.RoIAlignRotated((2, 3), 0.5, 2, False, True),
                        lambda m, r: m(X, as_list(rotated(r)))),
    "MultiScaleRoIPooler": (lambda: roiops.MultiScaleRoIPooler(3, [0.5, 0.25], "roi_warp", 2, canonical_size=16),
                            lambda m, r: m(LEVELS, r)),
    "MultiScaleRoIAlign": (multiscale_align,
                           lambda m, r: m({"p2": LEVELS[0], "p3": LEVELS[1], "other": X}, as_list(r), [(32, 40)])),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_script_and_save(name):
    make, call = MODULES[name]
    eager = make()
    script = save_load(scripted(make()))
    for rois in (ROIS, OTHER_ROIS):
        torch.testing.assert_close(call(script, rois), call(eager, rois), rtol=0, atol=0)


def test_scripted_module_gradients_match():
    eager, script = roiops.RoIAlign(3, 0.5, 2), scripted(roiops.RoIAlign(3, 0.5, 2))
    grads = []
    for m in (eager, script):
        x, rois = X.clone().requires_grad_(), ROIS.clone().requires_grad_()
        grads.append(torch.autograd.grad(m(x, rois).square().sum(), (x, rois)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class FixedImages(torch.nn.Module):
    """MultiScaleRoIAlign with its image sizes fixed: torch.jit.trace takes tensors only."""

    def __init__(self):
        super().__init__()
        self.pool = multiscale_align()

    def forward(self, p2, p3, boxes0, boxes1):
        return self.pool({"p2": p2, "p3": p3}, [boxes0, boxes1], [(32, 40)])


TRACED = {
    "roi_align": (lambda x, r: roiops.roi_align(x, r, 3, 0.5, 2, True), lambda r: (X, r)),
    "roi_pool_list": (lambda x, r0, r1: roiops.roi_pool(x, [r0, r1], 2, 0.5), lambda r: (X, *as_list(r))),
    "RoIWarp": (roiops.RoIWarp(3, 0.5, 2), lambda r: (X, r)),
    "ps_roi_align": (lambda x, r: roiops.ps_roi_align(x, r, (3, 1), 0.5, 2), lambda r: (X, r)),
    "prroi_pool": (lambda x, r: roiops.prroi_pool(x, r, 3, 0.5), lambda r: (X, r)),
    "roi_align_rotated": (lambda x, r: roiops.roi_align_rotated(x, r, 3, 0.5, 2), lambda r: (X, rotated(r))),
    "MultiScaleRoIPooler": (roiops.MultiScaleRoIPooler(3, [0.5, 0.25], canonical_size=16), lambda r: (LEVELS, r)),
    "MultiScaleRoIAlign": (FixedImages(), lambda r: (*LEVELS, *as_list(r))),
}


@pytest.mark.parametrize("name", list(TRACED))
def test_trace_is_warning_free_and_generalises(name):
    fn, args = TRACED[name]
    with warnings.catch_warnings(record=True) as caught:
        traced = torch.jit.trace(fn, args(ROIS))
    ours = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)
            or os.path.abspath(w.filename).startswith(ROIOPS_DIR)]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
    torch.testing.assert_close(traced(*args(OTHER_ROIS)), fn(*args(OTHER_ROIS)), rtol=0, atol=0)
