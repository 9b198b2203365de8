"""ONNX export of roiops' ops, for both of torch.onnx's exporters.

- ``torch.onnx.export(model, args, dynamo=False)`` (TorchScript-based): the symbolic
  functions are registered when roiops is imported (:func:`register_symbolics`).
- ``torch.onnx.export(model, args, custom_translation_table=roiops.onnx.translation_table())``
  (torch.export-based, the default): the translation functions need ``onnxscript``
  (``pip install roiops[onnx]``).

Both exporters build the same graph, written once below against a small builder
interface, so their results agree. Each variant maps to:

- roi_align avg bilinear: ONNX ``RoiAlign`` (opset 16; ``half_pixel`` for aligned=True,
  ``output_half_pixel`` otherwise).
- roi_warp avg bilinear: the box rounded half away from zero in the graph, then
  ``RoiAlign`` with ``output_half_pixel``.
- roi_pool max: the box rounded in the graph, then ``MaxRoiPool``.
- roi_pool avg: an exact decomposition (integral image in float64, four Gathers).
- every other sampled variant (max, or nearest sampling) with a fixed
  ``sampling_ratio > 0``: an exact decomposition (float64 sample positions, per-axis
  taps, Gather, ReduceMax / ReduceSum), the same formulas as ``roiops.reference``.
- those variants with adaptive sampling (``sampling_ratio <= 0``) have no translation:
  their sample grid depends on each box's size. Export fails with a NotImplementedError
  naming the variant. ONNX Runtime's RoiAlign ``mode="max"`` takes the max over
  weighted taps, not over samples, so max is never mapped onto it.
- ps_roi_align, ps_roi_pool, prroi_pool and roi_align_rotated have no translation
  (NotImplementedError saying why): no standard operator computes them.

The box geometry is computed in float64 in the graph and non-finite boxes pool to 0, as
in roiops. Where a standard operator computes part of it, its own precision applies
(README, ONNX): RoiAlign samples adaptive grids without roiops' cap of 64 per bin axis
and computes sample positions in the map's dtype; MaxRoiPool computes its bin edges in
float32 (as torchvision's roi_pool) and skips NaN features. The second output (max
mode's argmax, used only by the backward) is exported empty.
"""

from __future__ import annotations

import torch

from ._registration import FORWARD_OPS, argument_names

# RoiAlign with coordinate_transformation_mode (half_pixel) is opset 16.
OPSET = 16

_INT64, _INT32, _FLOAT, _DOUBLE = 7, 6, 1, 11  # onnx.TensorProto data types


# ---------------------------------------------------------------------------------
# The graph, written once for both exporters. `b` is a builder: b.op(name, *inputs,
# **attributes), b.const(value, data_type), b.reduce(name, x, axes), b.is_float64(x).


def _const(b, value, dtype=_DOUBLE):
    return b.const(value, dtype)


def _col(b, t, start, end):
    return b.op("Slice", t, _const(b, [start], _INT64), _const(b, [end], _INT64), _const(b, [1], _INT64))


def _round_half_away(b, x):
    """C's round (reference._round_half_away): trunc(x), plus sign(x) where the
    fraction, computed exactly, is at least a half. ONNX has no Trunc."""
    sign = b.op("Sign", x)
    t = b.op("Mul", sign, b.op("Floor", b.op("Abs", x)))
    half = b.op("GreaterOrEqual", b.op("Abs", b.op("Sub", x, t)), _const(b, 0.5))
    return b.op("Where", half, b.op("Add", t, sign), t)


def _boxes(b, rois, scale, quantize):
    """Batch indices [K] (int64) and scaled boxes [K, 4] in float64, zeroed where any
    coordinate is non-finite, with that mask [K, 1]."""
    batch = b.op("Cast", b.op("Squeeze", _col(b, rois, 0, 1), _const(b, [1], _INT64)), to=_INT64)
    c = b.op("Mul", b.op("Cast", _col(b, rois, 1, 5), to=_DOUBLE), _const(b, scale))
    if quantize:
        c = _round_half_away(b, c)
    # c - c is NaN exactly where c is NaN or infinite.
    finite = b.op("Equal", b.reduce("ReduceSum", b.op("Sub", c, c), [1]), _const(b, 0.0))
    c = b.op("Where", finite, c, _const(b, 0.0))
    return batch, c, finite


def _mask_rois(b, out, finite):
    """Zero the output of RoIs with a non-finite coordinate ([K, 1] mask)."""
    mask = b.op("Unsqueeze", finite, _const(b, [2, 3], _INT64))
    return b.op("Where", mask, out, b.op("CastLike", _const(b, 0.0), out))


def _size(b, x, dim):
    """Size `dim` of x as ([1] int64, [1] float64)."""
    n = b.op("Shape", x, start=dim, end=dim + 1)
    return n, b.op("Cast", n, to=_DOUBLE)


def _via_roi_align(b, x, rois, scale, ph, pw, sampling_ratio, aligned, quantize):
    batch, c, finite = _boxes(b, rois, scale, quantize)
    out = b.op(
        "RoiAlign", x, b.op("CastLike", c, x), batch,
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
        mode="avg", output_height=ph, output_width=pw, sampling_ratio=sampling_ratio, spatial_scale=1.0,
    )
    return _mask_rois(b, out, finite)


def _axis_taps(b, coord, size, sampling):
    """reference._axis_taps on float64 coordinates: (lo, hi, w_lo, w_hi, valid)."""
    valid = b.op("And", b.op("GreaterOrEqual", coord, _const(b, -1.0)), b.op("LessOrEqual", coord, size))
    zero = _const(b, 0.0)
    coord = b.op("Where", valid, coord, zero)
    coord = b.op("Where", b.op("Less", coord, zero), zero, coord)
    last = b.op("Sub", size, _const(b, 1.0))
    if sampling == "nearest":
        idx = b.op("Min", b.op("Floor", b.op("Add", coord, _const(b, 0.5))), last)
        return idx, idx, None, None, valid
    lo = b.op("Floor", coord)
    at_edge = b.op("GreaterOrEqual", lo, last)
    lo = b.op("Where", at_edge, last, lo)
    hi = b.op("Where", at_edge, lo, b.op("Add", lo, _const(b, 1.0)))
    coord = b.op("Where", at_edge, lo, coord)
    frac = b.op("Sub", coord, lo)
    return lo, hi, b.op("Sub", _const(b, 1.0), frac), frac, valid


def _sampled(b, x, rois, scale, ph, pw, g, aligned, quantize, mode, sampling):
    """reference._sampled with a fixed grid of g x g samples per bin."""
    acc = _DOUBLE if b.is_float64(x) else _FLOAT
    batch, c, finite = _boxes(b, rois, scale, quantize)
    off = 0.5 if aligned else 0.0
    x0, y0 = (b.op("Sub", _col(b, c, i, i + 1), _const(b, off)) for i in (0, 1))  # [K, 1]
    rw = b.op("Sub", b.op("Sub", _col(b, c, 2, 3), _const(b, off)), x0)
    rh = b.op("Sub", b.op("Sub", _col(b, c, 3, 4), _const(b, off)), y0)
    if not aligned:
        rw, rh = b.op("Max", rw, _const(b, 1.0)), b.op("Max", rh, _const(b, 1.0))
    bw, bh = b.op("Div", rw, _const(b, float(pw))), b.op("Div", rh, _const(b, float(ph)))

    def coords(start, bin_size, pooled):
        # [K, pooled, g]; the operation order of csrc/roi_geometry.h: sample_coord.
        start, bin_size = (b.op("Unsqueeze", t, _const(b, [2], _INT64)) for t in (start, bin_size))
        p = _const(b, [[[float(i)] for i in range(pooled)]])
        i = _const(b, [[[k + 0.5 for k in range(g)]]])
        return b.op("Add", b.op("Add", start, b.op("Mul", p, bin_size)),
                    b.op("Div", b.op("Mul", i, bin_size), _const(b, float(g))))

    hi_, hd = _size(b, x, 2)
    wi_, wd = _size(b, x, 3)
    ylo, yhi, wylo, wyhi, vy = _axis_taps(b, coords(y0, bh, ph), hd, sampling)
    xlo, xhi, wxlo, wxhi, vx = _axis_taps(b, coords(x0, bw, pw), wd, sampling)

    def rows(t):  # [K, PH, g] -> [K, PH, g, 1, 1]
        return b.op("Unsqueeze", t, _const(b, [3, 4], _INT64))

    def cols(t):  # [K, PW, g] -> [K, 1, 1, PW, g]
        return b.op("Unsqueeze", t, _const(b, [1, 2], _INT64))

    # The map as [N * H * W, C] rows, gathered at flat pixel indices [K, PH, g, PW, g].
    table = b.op("Flatten", b.op("Transpose", b.op("Cast", x, to=acc), perm=[0, 2, 3, 1]), axis=3)
    base = b.op("Unsqueeze", b.op("Mul", batch, b.op("Mul", hi_, wi_)), _const(b, [1, 2, 3, 4], _INT64))

    def at(yi, xi):
        yi, xi = b.op("Cast", rows(yi), to=_INT64), b.op("Cast", cols(xi), to=_INT64)
        return b.op("Gather", table, b.op("Add", b.op("Add", base, b.op("Mul", yi, wi_)), xi), axis=0)

    def outer(wy, wx):
        # Per-axis weights rounded to the accumulation type first, then multiplied in it.
        w = b.op("Mul", rows(b.op("Cast", wy, to=acc)), cols(b.op("Cast", wx, to=acc)))
        return b.op("Unsqueeze", w, _const(b, [5], _INT64))

    if sampling == "nearest":
        val = at(ylo, xlo)
    else:
        val = b.op("Mul", outer(wylo, wxlo), at(ylo, xlo))
        val = b.op("Add", val, b.op("Mul", outer(wylo, wxhi), at(ylo, xhi)))
        val = b.op("Add", val, b.op("Mul", outer(wyhi, wxlo), at(yhi, xlo)))
        val = b.op("Add", val, b.op("Mul", outer(wyhi, wxhi), at(yhi, xhi)))
    on_map = b.op("Unsqueeze", b.op("And", rows(vy), cols(vx)), _const(b, [5], _INT64))
    val = b.op("Where", on_map, val, _const(b, 0.0, acc))  # off-map samples read 0
    # [K, PH, g, PW, g, C] -> [K, C, PH, PW, g * g], samples row-major.
    val = b.op("Transpose", val, perm=[0, 5, 1, 3, 2, 4])
    val = b.op("Reshape", val, _const(b, [0, 0, ph, pw, g * g], _INT64))
    if mode == "avg":
        out = b.op("Div", b.reduce("ReduceSum", val, [4], keepdims=0), _const(b, float(g * g), acc))
    else:
        out = b.reduce("ReduceMax", val, [4], keepdims=0)
    return b.op("CastLike", _mask_rois(b, out, finite), x)


def _pool_bins(b, start, end, pooled, size):
    """roi_pool's integer bins [K, pooled] (reference._pool: bins), begin and end."""
    extent = b.op("Max", b.op("Add", b.op("Sub", end, start), _const(b, 1.0)), _const(b, 1.0))
    p = _const(b, [[float(i) for i in range(pooled)]])
    zero = _const(b, 0.0)

    def edge(fn, q):
        e = b.op("Add", b.op(fn, b.op("Div", b.op("Mul", q, extent), _const(b, float(pooled)))), start)
        return b.op("Cast", b.op("Max", b.op("Min", e, size), zero), to=_INT64)

    return edge("Floor", p), edge("Ceil", b.op("Add", p, _const(b, 1.0)))


def _pool_avg(b, x, rois, scale, ph, pw):
    """Exact roi_pool avg: each bin's sum from a float64 integral image of the map."""
    batch, c, finite = _boxes(b, rois, scale, True)
    hi_, hd = _size(b, x, 2)
    wi_, wd = _size(b, x, 3)
    hs, he = _pool_bins(b, _col(b, c, 1, 2), _col(b, c, 3, 4), ph, hd)  # [K, PH]
    ws, we = _pool_bins(b, _col(b, c, 0, 1), _col(b, c, 2, 3), pw, wd)  # [K, PW]
    axis2, axis3 = _const(b, 2, _INT64), _const(b, 3, _INT64)
    integral = b.op("CumSum", b.op("CumSum", b.op("Cast", x, to=_DOUBLE), axis2), axis3)
    integral = b.op("Pad", integral, _const(b, [0, 0, 1, 1, 0, 0, 0, 0], _INT64))  # [N, C, H+1, W+1]
    table = b.op("Flatten", b.op("Transpose", integral, perm=[0, 2, 3, 1]), axis=3)
    one = _const(b, [1], _INT64)
    w1 = b.op("Add", wi_, one)
    base = b.op("Unsqueeze", b.op("Mul", batch, b.op("Mul", b.op("Add", hi_, one), w1)), _const(b, [1, 2], _INT64))

    def at(y, x_):  # y [K, PH], x_ [K, PW] -> [K, PH, PW, C]
        y = b.op("Unsqueeze", y, _const(b, [2], _INT64))
        x_ = b.op("Unsqueeze", x_, _const(b, [1], _INT64))
        return b.op("Gather", table, b.op("Add", b.op("Add", base, b.op("Mul", y, w1)), x_), axis=0)

    total = b.op("Add", b.op("Sub", b.op("Sub", at(he, we), at(hs, we)), at(he, ws)), at(hs, ws))
    count = b.op("Mul", b.op("Unsqueeze", b.op("Sub", he, hs), _const(b, [2], _INT64)),
                 b.op("Unsqueeze", b.op("Sub", we, ws), _const(b, [1], _INT64)))
    count = b.op("Unsqueeze", b.op("Cast", b.op("Max", count, _const(b, 1, _INT64)), to=_DOUBLE),
                 _const(b, [3], _INT64))
    out = b.op("Transpose", b.op("Div", total, count), perm=[0, 3, 1, 2])
    return b.op("CastLike", _mask_rois(b, out, finite), x)


def _pool_max(b, x, rois, scale, ph, pw):
    batch, c, finite = _boxes(b, rois, scale, True)
    # Boxes rounded in float64 here, so MaxRoiPool (spatial_scale 1) rounds integers.
    rois5 = b.op("Concat", b.op("Unsqueeze", b.op("Cast", batch, to=_DOUBLE), _const(b, [1], _INT64)), c, axis=1)
    out = b.op("MaxRoiPool", x, b.op("CastLike", rois5, x), pooled_shape=[ph, pw], spatial_scale=1.0)
    return _mask_rois(b, out, finite)


def _variant(op, mode, sampling, sampling_ratio):
    if op == "roi_pool":
        return f"{op} mode={mode!r}"
    return f"{op} mode={mode!r} sampling={sampling!r} sampling_ratio={sampling_ratio}"


def _single(b, op, x, rois, scale, ph, pw, sampling_ratio=0, aligned=False, mode="max", sampling="bilinear",
            clockwise=False):
    """One map's graph for `op`; see the module docstring for which variant maps to what."""
    if op == "roi_align_rotated":
        raise NotImplementedError(
            "roiops.onnx: roi_align_rotated has no ONNX translation: no standard ONNX op samples a turned grid, "
            "and ONNX's Cos and Sin are not exact to the last bit, so a decomposition could put a sample on the "
            "other side of a pixel border than roiops does"
        )
    if op.startswith("ps_"):
        raise NotImplementedError(
            f"roiops.onnx: {op} has no ONNX translation: no standard ONNX op reads a different channel per "
            "bin, and pooling every channel in every bin to pick one would cost PH * PW times the op"
        )
    if op == "prroi_pool":
        raise NotImplementedError(
            "roiops.onnx: prroi_pool has no ONNX translation: no standard ONNX op integrates the bilinear "
            "surface exactly (RoiAlign samples it), and a decomposition would weigh every pixel of the map "
            "for every bin"
        )
    if op == "roi_pool":
        return (_pool_max if mode == "max" else _pool_avg)(b, x, rois, scale, ph, pw)
    quantize = op == "roi_warp"
    if mode == "avg" and sampling == "bilinear":
        return _via_roi_align(b, x, rois, scale, ph, pw, max(sampling_ratio, 0), aligned, quantize)
    if sampling_ratio <= 0:
        raise NotImplementedError(
            f"roiops.onnx: {_variant(op, mode, sampling, sampling_ratio)} has no ONNX translation: adaptive "
            "sampling (sampling_ratio <= 0) gives every box its own sample grid, and ONNX's RoiAlign computes "
            "avg bilinear only (its max is not roiops' max). Export with a fixed sampling_ratio > 0."
        )
    return _sampled(b, x, rois, scale, ph, pw, sampling_ratio, aligned, quantize, mode, sampling)


def _multilevel(b, op, maps, rois, levels, scales, ph, pw, **params):
    """RoI k pooled from maps[levels[k]]: every level pools every RoI and Where keeps
    each RoI's own (L times the work of one level; no data-dependent shapes)."""
    out = None
    for level, (x, scale) in enumerate(zip(maps, scales, strict=True)):
        pooled = _single(b, op, x, rois, scale, ph, pw, **params)
        if out is None:
            out = pooled
            continue
        here = b.op("Reshape", b.op("Equal", levels, _const(b, level, _INT64)), _const(b, [-1, 1, 1, 1], _INT64))
        out = b.op("Where", here, pooled, out)
    return out


def _forward(b, name, args):
    """Forward op `name`'s outputs from its arguments by schema name, so that a parameter
    added to the schema reaches _single as the keyword of the same name."""
    params = dict(args)
    del params["keep_argmax"]  # the argmax is exported empty either way
    ph, pw = params.pop("pooled_height"), params.pop("pooled_width")
    op, rois = name.removesuffix("_multilevel"), params.pop("rois")
    if "inputs" in params:
        out = _multilevel(b, op, params.pop("inputs"), rois, params.pop("levels"), params.pop("spatial_scales"),
                          ph, pw, **params)
    else:
        out = _single(b, op, params.pop("input"), rois, params.pop("spatial_scale"), ph, pw, **params)
    return out, b.const([], _INT32)


# ---------------------------------------------------------------------------------
# TorchScript-based exporter (torch.onnx.export(..., dynamo=False)).

class _LegacyBuilder:
    _SUFFIX = {str: "s", int: "i", bool: "i", float: "f"}
    _TORCH = {_INT64: torch.int64, _INT32: torch.int32, _DOUBLE: torch.float64, _FLOAT: torch.float32}

    def __init__(self, g):
        self.g = g

    def op(self, name, *inputs, **attrs):
        named = {}
        for key, value in attrs.items():
            kind = type(value[0]) if isinstance(value, (list, tuple)) else type(value)
            named[f"{key}_{self._SUFFIX[kind]}"] = value
        return self.g.op(name, *inputs, **named)

    def const(self, value, dtype):
        return self.g.op("Constant", value_t=torch.tensor(value, dtype=self._TORCH[dtype]))

    def reduce(self, name, x, axes, keepdims=1):
        # ReduceSum takes axes as an input from opset 13, ReduceMax from opset 18.
        if name == "ReduceSum" or self.g.opset >= 18:
            return self.op(name, x, self.const(axes, _INT64), keepdims=keepdims)
        return self.op(name, x, axes=axes, keepdims=keepdims)

    def is_float64(self, x):
        return x.type().dtype() == torch.float64


def _legacy_symbolic(name):
    from torch.onnx import symbolic_helper

    arguments = getattr(torch.ops.roiops, name).default._schema.arguments
    # symbolic_helper._parse_arg's kind of each schema type; a Tensor[] is unpacked below.
    kinds = {"Tensor": "v", "List[Tensor]": "v", "float": "f", "List[float]": "fs", "int": "i", "bool": "b",
             "str": "s"}

    def symbolic(g, *values):
        # The op's non-tensor arguments arrive as graph constants.
        args = {}
        for a, value in zip(arguments, values, strict=True):
            parsed = symbolic_helper._parse_arg(value, kinds[str(a.type)])
            args[a.name] = symbolic_helper._unpack_list(parsed) if str(a.type) == "List[Tensor]" else parsed
        return _forward(_LegacyBuilder(g), name, args)

    return symbolic


def register_symbolics() -> None:
    """Register the TorchScript-based exporter's symbolic functions (on `import roiops`)."""
    for name in FORWARD_OPS:
        torch.onnx.register_custom_op_symbolic(f"roiops::{name}", _legacy_symbolic(name), OPSET)


# ---------------------------------------------------------------------------------
# torch.export-based exporter (the default): onnxscript functions, traced.

class _ScriptBuilder:
    def __init__(self):
        import numpy as np
        import onnx_ir as ir
        from onnxscript import opset18

        self.ops, self.ir, self.np = opset18, ir, np
        self._np = {_INT64: np.int64, _INT32: np.int32, _DOUBLE: np.float64, _FLOAT: np.float32}

    def op(self, name, *inputs, **attrs):
        return getattr(self.ops, name)(*inputs, **attrs)

    def const(self, value, dtype):
        return self.ops.Constant(value=self.ir.tensor(self.np.asarray(value, dtype=self._np[dtype])))

    def reduce(self, name, x, axes, keepdims=1):
        return self.op(name, x, self.const(axes, _INT64), keepdims=keepdims)

    def is_float64(self, x):
        return x.dtype == self.ir.DataType.DOUBLE


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export`` (the torch.export-based
    exporter): every roiops forward op to its ONNX graph. Needs onnxscript."""
    builder = _ScriptBuilder()

    def translation(name):
        op = getattr(torch.ops.roiops, name).default
        names = argument_names(op)
        defaults = {a.name: a.default_value for a in op._schema.arguments if a.has_default_value()}

        # The exporter passes the FX node's arguments, which leave out those equal to their default.
        def translate(*args, **kwargs):
            return _forward(builder, name, {**defaults, **dict(zip(names, args, strict=False)), **kwargs})

        return translate

    return {getattr(torch.ops.roiops, name).default: translation(name) for name in FORWARD_OPS}
