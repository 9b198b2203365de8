"""Fake kernels and autograd formulas for the ops declared in csrc/roiops.cpp.

Each public op F(maps, *index, *params) -> (output, argmax) comes with two registered
companions:
  _F_backward(grad, maps, argmax, *index, *params)  the input gradient, J^T grad
  _F_jvp(tangents, argmax, *index, *params)         the forward's Jacobian J applied
They are each other's adjoint, so registering one as the derivative of the other makes
every order of input derivative available (double backward included). argmax is the
forward's choice of sample per bin in max mode (empty in avg mode), which fixes J.
roi_align also has _roi_align*_backward_rois, the analytic box gradient.

The position-sensitive ops (named ps_*: ps_roi_align, ps_roi_pool) read input channel
c * PH * PW + bin for output channel c, so their output has C / (PH * PW) channels; they
have no mode parameter (avg only: their argmax is always empty) and no multilevel form.

The forward ops take a last argument keep_argmax: False skips the argmax (and its
memory) when no gradient will be asked for; the Python wrappers decide it.

`maps` is one feature map (roi_align, roi_warp, roi_pool; index = (rois,)) or the list
of pyramid levels (the *_multilevel ops; index = (rois, levels)). The kernels never
mutate their inputs, so no schema needs an alias annotation.

Nothing here names an op or a parameter's position: the ops, their companions and where
pooled_height, pooled_width and mode sit are read from the schemas, the one declaration
of each op's parameters (docs/architecture.md: adding a parameter).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

# Every op csrc/roiops.cpp declares (iterating torch.ops.roiops lists only those looked up so far).
OPS = sorted(name.removeprefix("roiops::") for name in torch._C._dispatch_get_all_op_names()
             if name.startswith("roiops::"))
FORWARD_OPS = [name for name in OPS if not name.startswith("_")]


def output_memory_format(input: Tensor) -> torch.memory_format:
    """The format PyTorch's own ops would give an output computed from ``input``
    (``Tensor::suggest_memory_format``), as csrc/op_common.cpp: output_format."""
    return suggest_memory_format(input)


def finest(maps: list[Tensor]) -> Tensor:
    """The level with the most pixels (the first of equals): it decides the format of
    a multilevel op's output, as csrc/op_common.cpp: empty_output."""
    return max(maps, key=lambda m: m.shape[2] * m.shape[3])


def _empty(like: Tensor, shape) -> Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=output_memory_format(like))


def check_devices(op: str, named: dict) -> None:
    """The fake kernels' counterpart of the kernels' device checks: a direct op call
    mixing devices (e.g. a meta tensor with CPU tensors, which dispatches here) must
    raise rather than return uninitialised memory on the first tensor's device."""
    tensors = [(name, t) for name, v in named.items() for t in (v if isinstance(v, (list, tuple)) else [v])]
    device = tensors[0][1].device
    for name, t in tensors:
        if t.device != device:
            raise ValueError(f"{op}: {name} are on {t.device} but {tensors[0][0]} are on {device}")


def _op(name: str):
    return getattr(torch.ops.roiops, name).default


def argument_names(op) -> list[str]:
    """The names of an op's arguments in schema order (csrc/roiops.cpp)."""
    return [a.name for a in op._schema.arguments]


def _register(base: str) -> None:
    forward, backward, jvp = _op(base), _op(f"_{base}_backward"), _op(f"_{base}_jvp")
    # Without a box-gradient op the box gradient is 0.
    rois_grad = _op(f"_{base}_backward_rois") if f"_{base}_backward_rois" in OPS else None
    multilevel = base.endswith("_multilevel")
    n_index = 2 if multilevel else 1  # (rois, levels) or (rois,)
    # Positions in `rest`, the forward's and the jvp's arguments after the maps.
    names = argument_names(forward)[1:]
    ph_at, pw_at = names.index("pooled_height"), names.index("pooled_width")
    mode_at = names.index("mode") if "mode" in names else None  # None: avg only
    position_sensitive = base.startswith("ps_")

    def channels(like, rest):
        if not position_sensitive:
            return like.shape[1]
        group = rest[ph_at] * rest[pw_at]
        torch._check_value(
            like.shape[1] % group == 0,
            lambda: f"{base}: input channels ({like.shape[1]}) must be a multiple of output_size[0] * "
            f"output_size[1] = {group}",
        )
        return like.shape[1] // group

    def empty_output(maps, rest):
        like = finest(maps) if multilevel else maps
        return _empty(like, (rest[0].shape[0], channels(like, rest), rest[ph_at], rest[pw_at]))

    def check(op, maps_name, maps, rest, **named):
        # rest starts with the index tensors: (rois,) or (rois, levels)
        index = dict(zip(("boxes", "levels"), rest[:n_index], strict=False))
        check_devices(op, {maps_name: maps, **index, **named})

    @torch.library.register_fake(forward)
    def _forward_fake(maps, *rest):
        # rest = (*index, *params, keep_argmax); a direct call may leave keep_argmax to its default.
        check(base, "inputs", maps, rest)
        keep_argmax = rest[-1] if len(rest) == len(names) else True
        out = empty_output(maps, rest[: len(names) - 1])
        if mode_at is not None and rest[mode_at] == "max" and keep_argmax:
            return out, torch.empty_like(out, dtype=torch.int32)
        return out, out.new_empty((0,), dtype=torch.int32)

    @torch.library.register_fake(backward)
    def _backward_fake(grad, maps, argmax, *rest):
        check(f"_{base}_backward", "inputs", maps, rest, grad=grad, argmax=argmax)
        if multilevel:
            return [_empty(m, m.shape) for m in maps]
        return _empty(maps, maps.shape)

    @torch.library.register_fake(jvp)
    def _jvp_fake(tangents, argmax, *rest):
        check(f"_{base}_jvp", "tangents", tangents, rest, argmax=argmax)
        return empty_output(tangents, rest)

    def save(ctx, maps, argmax, index, params):
        ctx.n_maps = len(maps) if multilevel else 1
        ctx.save_for_backward(*(maps if multilevel else [maps]), argmax, *index)
        ctx.params = params

    def saved(ctx):
        tensors = ctx.saved_tensors
        maps = list(tensors[: ctx.n_maps]) if multilevel else tensors[0]
        return maps, tensors[ctx.n_maps], tensors[ctx.n_maps + 1 :]

    def any_grad(flag) -> bool:
        return any(flag) if isinstance(flag, (list, tuple)) else bool(flag)

    def none_like(maps):
        return [None] * len(maps) if multilevel else None

    def dense(grads, like):
        # Autograd passes None for list outputs that received no gradient.
        if not multilevel:
            return grads
        return [torch.zeros_like(m) if g is None else g for g, m in zip(grads, like, strict=True)]

    def forward_setup(ctx, inputs, output):
        # The backward ops take the forward's params without keep_argmax.
        save(ctx, inputs[0], output[1], inputs[1 : 1 + n_index], inputs[1 + n_index : -1])
        # The int32 argmax never gets a gradient: without this, autograd hands the
        # backward a zero-filled one as large as the output (a 50 MB fill for
        # roipool-vgg, 20 of its 51 ms backward with glibc's default malloc).
        ctx.set_materialize_grads(False)

    def forward_backward(ctx, grad, _grad_argmax):
        maps, argmax, index = saved(ctx)
        rois = index[0]
        grad_maps, grad_rois = none_like(maps), None
        # One gradient per argument the op was called with: the dispatcher drops a
        # keep_argmax equal to its default, and torch < 2.14 rejects the extra None for
        # ops with a Tensor[] argument (the multilevel ops) instead of trimming it.
        no_grads = (None,) * (len(ctx.needs_input_grad) - 2)
        if grad is None:  # no gradient reached the output (e.g. a downstream Function returned None)
            return (grad_maps, grad_rois) + no_grads
        if any_grad(ctx.needs_input_grad[0]):
            # The input gradient's own dependence on the boxes is not modelled: second
            # derivatives through box coordinates are not provided (README).
            grad_maps = backward(grad, maps, argmax, rois.detach(), *index[1:], *ctx.params)
        if ctx.needs_input_grad[1]:
            if rois_grad is None:
                grad_rois = torch.zeros_like(rois)
            else:
                detached = [m.detach() for m in maps] if multilevel else maps.detach()
                grad_rois = rois_grad(grad, detached, argmax, rois, *index[1:], *ctx.params)
        return (grad_maps, grad_rois) + no_grads

    torch.library.register_autograd(forward, forward_backward, setup_context=forward_setup)

    # _backward(grad, maps, argmax, ...): linear in grad; zero derivative in the maps
    # (avg is linear, max is piecewise constant in the choice of sample).
    def backward_setup(ctx, inputs, output):
        save(ctx, inputs[1], inputs[2], inputs[3 : 3 + n_index], inputs[3 + n_index :])

    def backward_backward(ctx, gg):
        maps, argmax, index = saved(ctx)
        d_grad = jvp(dense(gg, maps), argmax, *index, *ctx.params) if ctx.needs_input_grad[0] else None
        return (d_grad, none_like(maps)) + (None,) * (1 + n_index + len(ctx.params))

    torch.library.register_autograd(backward, backward_backward, setup_context=backward_setup)

    # _jvp(tangents, argmax, ...): linear in the tangents, adjoint of _backward (the
    # tangents stand in for the maps' shapes).
    def jvp_setup(ctx, inputs, output):
        save(ctx, inputs[0], inputs[1], inputs[2 : 2 + n_index], inputs[2 + n_index :])

    def jvp_backward(ctx, gout):
        tangents, argmax, index = saved(ctx)
        d_tangents = none_like(tangents)
        if any_grad(ctx.needs_input_grad[0]):
            d_tangents = backward(gout, tangents, argmax, *index, *ctx.params)
        return (d_tangents,) + (None,) * (1 + n_index + len(ctx.params))

    torch.library.register_autograd(jvp, jvp_backward, setup_context=jvp_setup)

    if rois_grad is not None:

        @torch.library.register_fake(rois_grad)
        def _rois_grad_fake(grad, maps, argmax, *rest):
            check(f"_{base}_backward_rois", "inputs", maps, rest, grad=grad, argmax=argmax)
            return torch.empty_like(rest[0], memory_format=torch.contiguous_format)

        def no_second_order(ctx, g):
            raise NotImplementedError(
                f"roiops: second derivatives through the box gradient of {base} are not "
                "implemented (the input path supports any order)"
            )

        torch.library.register_autograd(rois_grad, no_second_order, setup_context=lambda ctx, inputs, output: None)


for _name in FORWARD_OPS:
    _register(_name)


# Autocast (torch.autocast on CPU and CUDA): every roiops op runs in the dtype of the
# feature maps it is given, with the boxes in theirs. The kernels read float16 and
# bfloat16 natively, accumulate in float32 and take boxes of any floating dtype, so
# there is nothing to cast: an autocast rule that cast to float32 (as torchvision's
# roi_align does) would copy the whole map to pool a few thousand bins, and one that
# cast to the autocast dtype would round the boxes. The explicit fallthrough makes
# that policy part of each op's registration, where eager mode, torch.compile and
# torch.export all read it. The fused multilevel ops need every level in one dtype:
# levels of different dtypes are a ValueError, not a silent cast.
AUTOCAST_KEYS = ("AutocastCPU", "AutocastCUDA")
_autocast_lib = torch.library.Library("roiops", "IMPL")
for _op_name in OPS:
    for _key in AUTOCAST_KEYS:
        _autocast_lib.impl(_op_name, torch.library.fallthrough_kernel, _key)
