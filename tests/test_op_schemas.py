"""Each op's parameters are declared once, in its schema (csrc/roiops.cpp); the fake
kernels and the ONNX export read them from there. The user-facing functions, modules and
poolers spell them out again (users and TorchScript need real signatures), so these tests
fail when they and the schemas disagree: a parameter missing, renamed, or passed to the
op in the wrong position (docs/architecture.md: adding a parameter)."""

import inspect
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import roiops
from roiops import _registration
from roiops.ops import poolers

MODULES = {"roi_align": roiops.RoIAlign, "roi_warp": roiops.RoIWarp, "roi_pool": roiops.RoIPool,
           "ps_roi_align": roiops.PSRoIAlign, "ps_roi_pool": roiops.PSRoIPool, "prroi_pool": roiops.PrRoIPool,
           "roi_align_rotated": roiops.RoIAlignRotated}
# The families with a fused multilevel form and a pooler: all but the position-sensitive
# ops, prroi_pool and roi_align_rotated, which pool one map (docs/SEMANTICS.md).
POOLED = sorted(name for name in MODULES if not name.startswith(("ps_", "prroi_")) and name != "roi_align_rotated")
# Two valid values of each parameter: a test passes the one that is not the default, so a
# value that arrives under another parameter's name is seen. A new parameter needs a pair.
VALUES = {"sampling_ratio": (2, 3), "aligned": (False, True), "mode": ("avg", "max"),
          "sampling": ("bilinear", "nearest"), "clockwise": (False, True)}

X = torch.randn(1, 2, 8, 8)
X_PS = torch.randn(1, 12, 8, 8)  # 2 channels for each bin of a 2 x 3 output
ROIS = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0]])
ROTATED = torch.tensor([[0, 3.5, 3.0, 5.0, 4.0, 30.0]])  # roi_align_rotated's (batch, cx, cy, w, h, angle)


def schema_params(name: str) -> list[str]:
    """The op's parameters a user passes by name: those after the pooled size, but keep_argmax."""
    names = _registration.argument_names(getattr(torch.ops.roiops, name).default)
    return names[names.index("pooled_width") + 1 : names.index("keep_argmax")]


def params_between(fn, first: str, end: str | None = None) -> list[str]:
    names = list(inspect.signature(fn).parameters)
    return names[names.index(first) + 1 : names.index(end) if end else None]


def not_default(fn, params: list[str]) -> dict:
    defaults = {n: p.default for n, p in inspect.signature(fn).parameters.items()}
    return {n: next(value for value in VALUES[n] if value != defaults.get(n)) for n in params}


class OpCalls(TorchDispatchMode):
    """Records each roiops op call's arguments by schema name."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "roiops":
            self.calls[func._schema.name.removeprefix("roiops::")] = dict(
                zip(_registration.argument_names(func), args, strict=False))
        return func(*args, **(kwargs or {}))


def op_arguments(fn, *args, **kwargs) -> dict:
    with OpCalls() as recorded:
        fn(*args, **kwargs)
    return recorded.calls


def test_every_op_family_has_its_functions():
    families = [name for name in _registration.FORWARD_OPS if not name.endswith("_multilevel")]
    assert sorted(MODULES) == families
    assert POOLED == sorted(poolers._OPS)
    assert _registration.FORWARD_OPS == sorted(families + [f"{name}_multilevel" for name in POOLED])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_and_modules_take_the_schema_parameters(name):
    params = schema_params(name)
    if name in POOLED:
        assert schema_params(f"{name}_multilevel") == params
    assert params_between(getattr(roiops, name), "spatial_scale") == params
    assert params_between(MODULES[name].__init__, "spatial_scale") == params


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "torchscript"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_pass_each_parameter_to_the_op_by_its_name(name, scripted):
    fn = getattr(roiops, name)
    values = not_default(fn, schema_params(name))
    if scripted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch itself
            fn = torch.jit.script(fn)
    x = X_PS if name.startswith("ps_") else X
    rois = ROTATED if name == "roi_align_rotated" else ROIS
    arguments = op_arguments(fn, x, rois, (2, 3), spatial_scale=0.5, **values)[name]
    assert arguments["spatial_scale"] == 0.5 and (arguments["pooled_height"], arguments["pooled_width"]) == (2, 3)
    assert {n: arguments[n] for n in values} == values


def test_poolers_take_every_schema_parameter():
    every = list(dict.fromkeys(n for name in POOLED for n in schema_params(name)))
    assert sorted(params_between(poolers._pool_levels, "op", "canonical_size")) == sorted(every)
    assert sorted(params_between(roiops.MultiScaleRoIPooler.__init__, "op", "canonical_size")) == sorted(every)


@pytest.mark.parametrize("name", POOLED)
def test_poolers_pass_each_parameter_to_the_op_by_its_name(name):
    values = not_default(roiops.MultiScaleRoIPooler.__init__, schema_params(name))
    pooler = roiops.MultiScaleRoIPooler(2, [1.0, 0.5], name, **values, canonical_size=4)
    arguments = op_arguments(pooler, [X, X[:, :, ::2, ::2]], ROIS)[f"{name}_multilevel"]
    assert {n: arguments[n] for n in values} == values
