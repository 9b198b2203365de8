"""Argument checks and normalisation shared by the public ops.

Every check here raises a Python exception that names the argument and what was
wrong with it. Checks that need tensor *values* (batch indices) live in the C++
kernels, which run them before touching memory, so that torch.compile can trace the
Python side without data-dependent branches.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MODES = ("avg", "max")
SAMPLINGS = ("bilinear", "nearest")
# Bounds stated in csrc/roi_geometry.h (kMaxSamplingRatio, kMaxOutputSize): they keep
# sample counts, indices and per-RoI tables within int and the work per bin finite.
MAX_SAMPLING_RATIO = 1024
MAX_OUTPUT_SIZE = 65536


class BoxesShapeError(ValueError, AssertionError):
    """Boxes of the wrong shape. A ValueError, and also an AssertionError, which is what
    torchvision.ops raises for them (torch._assert), so that code written against either
    catches it."""


class BoxesTypeError(TypeError, AssertionError):
    """Boxes neither a Tensor nor a list of Tensors: a TypeError, and the AssertionError
    torchvision.ops raises for them."""


# One shared, reusable no-op context: torch.compile before torch 2.5 cannot trace a
# @contextlib.contextmanager generator, but traces a nullcontext instance.
_NO_CONTEXT = contextlib.nullcontext()


@contextlib.contextmanager
def _ignore_tracer_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def traced_checks():
    """Context for the argument checks of the Python (not TorchScript) path.

    Under torch.jit.trace a tensor's sizes are 0-dim tensors, so every shape check
    converts a tensor to a Python value and the tracer warns that the result becomes a
    constant of the trace. For an argument check (and MultiScaleRoIAlign's scales, fixed
    on the first call) that is the intent: the ops check the values again whenever the
    trace runs. torch silences these warnings in its own modules the same way
    (torch.jit.TracerWarning.ignore_lib_warnings); here only while tracing.
    """
    if torch.jit.is_tracing():
        return _ignore_tracer_warnings()
    return _NO_CONTEXT


def check_input(op: str, input: Tensor) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be [N, C, H, W], got shape {tuple(input.shape)}")
    if input.is_quantized:
        # torchvision's CPU roi_align takes quantized maps; roiops' kernels are floating-point only.
        raise TypeError(
            f"{op}: quantized input ({input.dtype}) is not supported; dequantize it first "
            "(input.dequantize()) and quantize the output if needed"
        )
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: input must be float16, bfloat16, float32 or float64, got {input.dtype}"
        )


def _is_int(value) -> bool:
    """An integer of any kind (Python, numpy, torch.SymInt under tracing), not a bool
    (numpy's bool is not a numbers.Integral)."""
    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def output_size_pair(op: str, output_size: int | Sequence[int]) -> tuple[int, int]:
    if _is_int(output_size):
        pair = (output_size, output_size)
    elif isinstance(output_size, Sequence) and len(output_size) == 2 and all(_is_int(v) for v in output_size):
        pair = (output_size[0], output_size[1])
    else:
        raise TypeError(f"{op}: output_size must be an int or a pair of ints, got {output_size!r}")
    # numpy integers become Python ints (the op schemas take int); SymInts stay symbolic.
    pair = tuple(v if isinstance(v, torch.SymInt) else int(v) for v in pair)
    if pair[0] <= 0 or pair[1] <= 0:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    if pair[0] > MAX_OUTPUT_SIZE or pair[1] > MAX_OUTPUT_SIZE:
        raise ValueError(f"{op}: output_size must be at most {MAX_OUTPUT_SIZE} per side, got {output_size!r}")
    return pair


def check_scale(op: str, spatial_scale: float) -> float:
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real):
        raise TypeError(f"{op}: spatial_scale must be a number, got {spatial_scale!r}")
    if not (math.isfinite(spatial_scale) and spatial_scale > 0):
        raise ValueError(f"{op}: spatial_scale must be positive and finite, got {spatial_scale!r}")
    return float(spatial_scale)


def check_sampling_ratio(op: str, sampling_ratio: int) -> int:
    if not _is_int(sampling_ratio) or isinstance(sampling_ratio, torch.SymInt):
        raise TypeError(f"{op}: sampling_ratio must be an int, got {sampling_ratio!r}")
    sampling_ratio = int(sampling_ratio)
    if sampling_ratio > MAX_SAMPLING_RATIO:
        raise ValueError(
            f"{op}: sampling_ratio must be at most {MAX_SAMPLING_RATIO} (<= 0 for adaptive), got {sampling_ratio}"
        )
    return max(sampling_ratio, 0)


def check_choice(op: str, name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {choices}, got {value!r}")
    return value


# What a box row holds after its batch index: axis-aligned corners, or a rotated box
# (roi_align_rotated: centre, size, angle in degrees).
BOX_FIELDS = "x1, y1, x2, y2"
ROTATED_FIELDS = "cx, cy, w, h, angle"


def rois_from_boxes(op: str, input: Tensor, boxes: Tensor | Sequence[Tensor], fields: str = BOX_FIELDS) -> Tensor:
    """Return boxes as a [K, 1 + F] Tensor of (batch_index, *fields), F fields per box.

    Accepts that form directly, or a list with one [L_i, F] Tensor per image
    (:func:`concat_boxes`). The result stays differentiable with respect to the given
    boxes.
    """
    F = len(fields.split(","))
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != F + 1:
            raise BoxesShapeError(
                f"{op}: boxes must be a [K, {F + 1}] Tensor (batch_index, {fields}) or a "
                f"list of [L, {F}] Tensors, got shape {tuple(boxes.shape)}"
            )
        _check_boxes(op, "boxes", boxes, input)
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise BoxesTypeError(
            f"{op}: boxes must be a Tensor[K, {F + 1}] or a list of Tensor[L, {F}], got "
            f"{type(boxes).__name__}"
        )
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor):
            raise BoxesShapeError(f"{op}: boxes[{i}] must be a [L, {F}] Tensor, got {type(b).__name__}")
    return concat_boxes(op, input, list(boxes), F)


def script_rois(op: str, input: Tensor, boxes: Tensor | list[Tensor], fields: int = 4) -> Tensor:
    """TorchScript's rois_from_boxes: TorchScript has checked the types, the op checks
    a [K, 1 + fields] Tensor's shape, dtype and device."""
    if isinstance(boxes, Tensor):
        return boxes
    return concat_boxes(op, input, boxes, fields)


def concat_boxes(op: str, input: Tensor, boxes: list[Tensor], fields: int = 4) -> Tensor:
    """The list form, one [L_i, fields] Tensor per image, as a [K, 1 + fields] Tensor
    (TorchScript-compatible). Boxes keep their own floating dtype, whatever the input's: the result
    has the boxes' promoted dtype unless that cannot hold every batch index exactly
    (bfloat16 beyond 256 images, float16 beyond 2048), then float32 (float64 beyond 2^24).
    """
    if len(boxes) != input.shape[0]:
        raise ValueError(f"{op}: got {len(boxes)} box tensors for a batch of {input.shape[0]} images")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != fields:
            raise BoxesShapeError(f"{op}: boxes[{i}] must be a [L, {fields}] Tensor, got shape {list(b.shape)}")
        _check_boxes(op, f"boxes[{i}]", b, input)
    if len(boxes) == 0:
        return input.new_zeros((0, 1 + fields))
    dtype = boxes[0].dtype
    for b in boxes[1:]:
        dtype = torch.promote_types(dtype, b.dtype)
    largest_index = len(boxes) - 1  # integers are exact up to 2 / eps of the dtype
    if (dtype == torch.bfloat16 and largest_index > 256) or (dtype == torch.float16 and largest_index > 2048):
        dtype = torch.float32
    if dtype == torch.float32 and largest_index > 2**24:
        dtype = torch.float64
    return torch.cat(
        [torch.cat([torch.full_like(b[:, :1], i, dtype=dtype), b.to(dtype)], dim=1) for i, b in enumerate(boxes)],
        dim=0,
    )


def _check_boxes(op: str, name: str, t: Tensor, input: Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.device != input.device:
        raise ValueError(f"{op}: {name} are on {t.device} but input is on {input.device}")


def script_size_pair(output_size: int | tuple[int, int]) -> tuple[int, int]:
    """TorchScript's output_size_pair (the op checks the values)."""
    if isinstance(output_size, int):
        return output_size, output_size
    return output_size[0], output_size[1]


def op_args(
    op: str, input: Tensor, boxes: Tensor | list[Tensor], output_size: int | tuple[int, int],
    spatial_scale: float, mode: str, fields: str = BOX_FIELDS,
) -> tuple[Tensor, int, int, float]:
    """The arguments every op takes, checked and normalised: ``(rois, PH, PW,
    spatial_scale)``, the boxes holding ``fields`` after the batch index. Under
    TorchScript, which has checked the argument types, only converted: the op checks the
    values."""
    if torch.jit.is_scripting():
        rois = script_rois(op, input, boxes, len(fields.split(", ")))
        ph, pw = script_size_pair(output_size)
    else:  # not compiled by TorchScript, which takes is_scripting() as a constant
        with traced_checks():
            check_input(op, input)
            rois = rois_from_boxes(op, input, boxes, fields)
            ph, pw = output_size_pair(op, output_size)
            spatial_scale = check_scale(op, spatial_scale)
            check_choice(op, "mode", mode, MODES)
    return rois, ph, pw, spatial_scale


def check_position_sensitive(op: str, input: Tensor, ph: int, pw: int) -> None:
    """The position-sensitive ops read input channel ``c * PH * PW + bin``: C must be a
    multiple of PH * PW."""
    with traced_checks():
        channels = input.shape[1]
        if channels % (ph * pw) != 0:
            raise ValueError(
                f"{op}: input channels ({channels}) must be a multiple of output_size[0] * output_size[1] = "
                f"{ph} * {pw} = {ph * pw} (position-sensitive pooling reads one channel per output channel "
                "and bin)"
            )


def sampling_args(op: str, sampling_ratio: int, sampling: str) -> int:
    """op_args for the sampled ops' own arguments: the sampling ratio, normalised."""
    if torch.jit.is_scripting():
        sampling_ratio = max(sampling_ratio, 0)
    else:
        sampling_ratio = check_sampling_ratio(op, sampling_ratio)
        check_choice(op, "sampling", sampling, SAMPLINGS)
    return sampling_ratio


def needs_argmax(tensors: list[Tensor]) -> bool:
    """Whether a gradient may be asked for, so that the forward keeps max mode's argmax."""
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t.requires_grad:
            return True
    return False
