"""roiops: RoIPool, RoIWarp and RoIAlign for PyTorch.

Each op has max/avg aggregation and (for the sampled ops) bilinear/nearest sampling,
input gradients of any order, box gradients for roi_align, float16/bfloat16/float32/
float64 and channels_last, and works under torch.compile and torch.export.
MultiScaleRoIPooler pools RoIs from an FPN pyramid in one fused op call;
MultiScaleRoIAlign is the same as a drop-in for torchvision.ops.MultiScaleRoIAlign.
ps_roi_align and ps_roi_pool are torchvision's position-sensitive ops (R-FCN);
prroi_pool is Precise RoI Pooling (exact bin integrals, analytic box gradients);
roi_align_rotated is RoIAlign on oriented boxes (with box gradients through the centre,
size and angle).
"""

try:
    import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)
except ModuleNotFoundError as missing:
    if missing.name != "torch":
        raise
    raise ModuleNotFoundError("roiops needs torch, which is not installed: pip install torch", name="torch") from None

from ._version import __version__ as __version__

try:
    from . import _C  # noqa: F401  (loads the library that registers torch.ops.roiops)
    from ._cpu import load as _load_cpu_kernels

    # The CPU kernel variant this process runs: "default", "avx2", "avx512" or
    # "native" (roiops/_cpu.py).
    cpu_capability: str = _load_cpu_kernels()
except ImportError as error:
    if isinstance(error, ModuleNotFoundError) and (error.name or "").startswith("roiops._"):
        raise ImportError(
            f"roiops' extension {error.name} is not built: in the source folder run "
            "`pip install --no-build-isolation .` (or `make build` for an in-place build)"
        ) from error
    # torch has no stable C++ ABI: an extension built against another torch (e.g. by an
    # isolated `pip install .`, which downloads its own) fails here with undefined symbols.
    raise ImportError(
        f"roiops' extension does not load with torch {torch.__version__}: it must be "
        "built against the torch it runs with; reinstall roiops with `pip install "
        f"--no-build-isolation .` in its source folder ({error})"
    ) from error

from . import (
    _registration,  # noqa: F401  (fake kernels, autograd and autocast)
    onnx,
    ops,
)
from .ops import (  # noqa: F401  (the public API, listed in ops.__all__)
    MultiScaleRoIAlign,
    MultiScaleRoIPooler,
    PrRoIPool,
    PSRoIAlign,
    PSRoIPool,
    RoIAlign,
    RoIAlignRotated,
    RoIPool,
    RoIWarp,
    fpn_levels,
    prroi_pool,
    ps_roi_align,
    ps_roi_pool,
    roi_align,
    roi_align_rotated,
    roi_pool,
    roi_warp,
)

# The TorchScript-based ONNX exporter finds symbolic functions in a registry, so they
# are registered here; it needs nothing beyond torch (the onnx packages are imported
# only by roiops.onnx.translation_table()).
onnx.register_symbolics()

__all__ = list(ops.__all__)
