"""Fake kernels and autograd formulas for the ops declared in csrc/roiops.cpp.

Each public op F(input, rois, *params) comes with two registered companions:
  _F_backward(grad, input, rois, *params)  the input gradient, J(input)^T grad
  _F_jvp(input, tangent, rois, *params)    the forward's Jacobian applied to tangent
They are each other's adjoint, so registering one as the derivative of the other makes
every order of input derivative available (double backward included). roi_align also
has _roi_align_backward_rois, the analytic box gradient. The kernels never mutate
their inputs, so no op here needs an alias annotation.
"""

from __future__ import annotations

import torch
from torch import Tensor

_FAMILIES = {
    # public op -> box-gradient op (None: the box gradient is identically zero)
    "roi_align": "_roi_align_backward_rois",
    "roi_warp": None,
    "roi_pool": None,
}


def output_memory_format(input: Tensor) -> torch.memory_format:
    """channels_last when the input is strictly channels_last, else contiguous.

    The same rule as csrc/cpu/cpu_common.cpp: output_format.
    """
    if input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _empty(like: Tensor, shape) -> Tensor:
    return torch.empty(
        shape, dtype=like.dtype, device=like.device, memory_format=output_memory_format(like)
    )


def _op(name: str):
    return getattr(torch.ops.roiops, name).default


def _register(name: str, rois_grad: str | None) -> None:
    forward, backward, jvp = _op(name), _op(f"_{name}_backward"), _op(f"_{name}_jvp")

    # pooled_height / pooled_width are params[1] / params[2] for every op.
    @torch.library.register_fake(forward)
    def _forward_fake(input, rois, *params):
        return _empty(input, (rois.shape[0], input.shape[1], params[1], params[2]))

    @torch.library.register_fake(backward)
    def _backward_fake(grad, input, rois, *params):
        return _empty(input, input.shape)

    @torch.library.register_fake(jvp)
    def _jvp_fake(input, tangent, rois, *params):
        return _empty(input, (rois.shape[0], input.shape[1], params[1], params[2]))

    def save_input_rois(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.params = inputs[2:]

    def forward_backward(ctx, grad):
        input, rois = ctx.saved_tensors
        grad_input = grad_rois = None
        if ctx.needs_input_grad[0]:
            # The input gradient's own dependence on the boxes is not modelled: second
            # derivatives through box coordinates are not provided (README).
            grad_input = backward(grad, input, rois.detach(), *ctx.params)
        if ctx.needs_input_grad[1]:
            if rois_grad is None:
                grad_rois = torch.zeros_like(rois)
            else:
                grad_rois = _op(rois_grad)(grad, input.detach(), rois, *ctx.params)
        return (grad_input, grad_rois) + (None,) * len(ctx.params)

    torch.library.register_autograd(forward, forward_backward, setup_context=save_input_rois)

    # _backward(grad, input, rois): linear in grad; its derivative in input is zero
    # (avg is linear, max is piecewise constant in the choice of sample).
    def save_backward(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], inputs[2])
        ctx.params = inputs[3:]

    def backward_backward(ctx, gg):
        input, rois = ctx.saved_tensors
        d_grad = jvp(input, gg, rois, *ctx.params) if ctx.needs_input_grad[0] else None
        return (d_grad, None, None) + (None,) * len(ctx.params)

    torch.library.register_autograd(backward, backward_backward, setup_context=save_backward)

    # _jvp(input, tangent, rois): linear in tangent, adjoint of _backward.
    def save_jvp(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[2])
        ctx.params = inputs[3:]

    def jvp_backward(ctx, gout):
        input, rois = ctx.saved_tensors
        d_tangent = backward(gout, input, rois, *ctx.params) if ctx.needs_input_grad[1] else None
        return (None, d_tangent, None) + (None,) * len(ctx.params)

    torch.library.register_autograd(jvp, jvp_backward, setup_context=save_jvp)

    if rois_grad is not None:
        rois_grad_op = _op(rois_grad)

        @torch.library.register_fake(rois_grad_op)
        def _rois_grad_fake(grad, input, rois, *params):
            return torch.empty_like(rois, memory_format=torch.contiguous_format)

        def no_second_order(ctx, g):
            raise NotImplementedError(
                f"roiops: second derivatives through the box gradient of {name} are not "
                "implemented (the input path supports any order)"
            )

        torch.library.register_autograd(
            rois_grad_op, no_second_order, setup_context=lambda ctx, inputs, output: None
        )


for _name, _rois_grad in _FAMILIES.items():
    _register(_name, _rois_grad)
