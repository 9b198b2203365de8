"""Fake kernels and autograd formulas for the ops declared in csrc/roiops.cpp.

Each public op F(maps, *index, *params) comes with two registered companions:
  _F_backward(grad, maps, *index, *params)  the input gradient, J(maps)^T grad
  _F_jvp(maps, tangents, *index, *params)   the forward's Jacobian applied to tangents
They are each other's adjoint, so registering one as the derivative of the other makes
every order of input derivative available (double backward included). roi_align also
has _roi_align*_backward_rois, the analytic box gradient.

`maps` is one feature map (roi_align, roi_warp, roi_pool; index = (rois,)) or the list
of pyramid levels (the *_multilevel ops; index = (rois, levels)). In both forms
params[1] and params[2] are the pooled height and width. The kernels never mutate
their inputs, so no schema needs an alias annotation.
"""

from __future__ import annotations

import torch
from torch import Tensor

_OPS = {
    # public op -> has a box-gradient op (otherwise the box gradient is identically 0)
    "roi_align": True,
    "roi_warp": False,
    "roi_pool": False,
}


def output_memory_format(input: Tensor) -> torch.memory_format:
    """channels_last when the input is strictly channels_last, else contiguous.

    The same rule as csrc/cpu/cpu_common.cpp: output_format.
    """
    if input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _empty(like: Tensor, shape) -> Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=output_memory_format(like))


def _op(name: str):
    return getattr(torch.ops.roiops, name).default


def _register(name: str, has_rois_grad: bool, multilevel: bool) -> None:
    base = f"{name}_multilevel" if multilevel else name
    forward, backward, jvp = _op(base), _op(f"_{base}_backward"), _op(f"_{base}_jvp")
    n_index = 2 if multilevel else 1  # (rois, levels) or (rois,)

    def first(maps):
        return maps[0] if multilevel else maps

    def out_shape(maps, index, params):
        return (index[0].shape[0], first(maps).shape[1], params[1], params[2])

    @torch.library.register_fake(forward)
    def _forward_fake(maps, *rest):
        return _empty(first(maps), out_shape(maps, rest[:n_index], rest[n_index:]))

    @torch.library.register_fake(backward)
    def _backward_fake(grad, maps, *rest):
        if multilevel:
            return [_empty(m, m.shape) for m in maps]
        return _empty(maps, maps.shape)

    @torch.library.register_fake(jvp)
    def _jvp_fake(maps, tangents, *rest):
        return _empty(first(maps), out_shape(maps, rest[:n_index], rest[n_index:]))

    def save(ctx, maps, index, params):
        ctx.n_maps = len(maps) if multilevel else 1
        ctx.save_for_backward(*(maps if multilevel else [maps]), *index)
        ctx.params = params

    def saved(ctx):
        tensors = ctx.saved_tensors
        maps = list(tensors[: ctx.n_maps]) if multilevel else tensors[0]
        return maps, tensors[ctx.n_maps :]

    def any_grad(flag) -> bool:
        return any(flag) if isinstance(flag, (list, tuple)) else bool(flag)

    def none_like(maps):
        return [None] * len(maps) if multilevel else None

    def dense(grads, maps):
        # Autograd passes None for outputs that did not receive a gradient.
        if not multilevel:
            return grads
        return [torch.zeros_like(m) if g is None else g for g, m in zip(grads, maps, strict=True)]

    def forward_setup(ctx, inputs, output):
        save(ctx, inputs[0], inputs[1 : 1 + n_index], inputs[1 + n_index :])

    def forward_backward(ctx, grad):
        maps, index = saved(ctx)
        rois = index[0]
        grad_maps, grad_rois = none_like(maps), None
        if any_grad(ctx.needs_input_grad[0]):
            # The input gradient's own dependence on the boxes is not modelled: second
            # derivatives through box coordinates are not provided (README).
            grad_maps = backward(grad, maps, rois.detach(), *index[1:], *ctx.params)
        if ctx.needs_input_grad[1]:
            if has_rois_grad:
                detached = [m.detach() for m in maps] if multilevel else maps.detach()
                grad_rois = _op(f"_{base}_backward_rois")(grad, detached, rois, *index[1:], *ctx.params)
            else:
                grad_rois = torch.zeros_like(rois)
        return (grad_maps, grad_rois) + (None,) * (n_index - 1 + len(ctx.params))

    torch.library.register_autograd(forward, forward_backward, setup_context=forward_setup)

    # _backward(grad, maps, ...): linear in grad; its derivative in the maps is zero
    # (avg is linear, max is piecewise constant in the choice of sample).
    def backward_setup(ctx, inputs, output):
        save(ctx, inputs[1], inputs[2 : 2 + n_index], inputs[2 + n_index :])

    def backward_backward(ctx, gg):
        maps, index = saved(ctx)
        d_grad = jvp(maps, dense(gg, maps), *index, *ctx.params) if ctx.needs_input_grad[0] else None
        return (d_grad, none_like(maps)) + (None,) * (n_index + len(ctx.params))

    torch.library.register_autograd(backward, backward_backward, setup_context=backward_setup)

    # _jvp(maps, tangents, ...): linear in tangents, adjoint of _backward.
    def jvp_setup(ctx, inputs, output):
        save(ctx, inputs[0], inputs[2 : 2 + n_index], inputs[2 + n_index :])

    def jvp_backward(ctx, gout):
        maps, index = saved(ctx)
        d_tangents = backward(gout, maps, *index, *ctx.params) if any_grad(ctx.needs_input_grad[1]) else None
        return (none_like(maps), d_tangents if d_tangents is not None else none_like(maps)) + (None,) * (
            n_index + len(ctx.params)
        )

    torch.library.register_autograd(jvp, jvp_backward, setup_context=jvp_setup)

    if has_rois_grad:
        rois_grad_op = _op(f"_{base}_backward_rois")

        @torch.library.register_fake(rois_grad_op)
        def _rois_grad_fake(grad, maps, rois, *rest):
            return torch.empty_like(rois, memory_format=torch.contiguous_format)

        def no_second_order(ctx, g):
            raise NotImplementedError(
                f"roiops: second derivatives through the box gradient of {base} are not "
                "implemented (the input path supports any order)"
            )

        torch.library.register_autograd(rois_grad_op, no_second_order, setup_context=lambda ctx, inputs, output: None)


for _name, _has_rois_grad in _OPS.items():
    for _multilevel in (False, True):
        _register(_name, _has_rois_grad, _multilevel)
