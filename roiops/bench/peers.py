"""The implementations the benchmark times, on the same inputs: roiops, torchvision,
ONNX Runtime and OpenVINO (a one-node ONNX ``RoiAlign`` model built here), and
roiops' pure-PyTorch reference. Every peer is optional: one that does not import is
skipped with a note."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .cases import Case

PEERS = ("torchvision", "onnxruntime", "openvino", "reference")
# What each peer needs to import, and how to install it.
_MODULES = {"torchvision": ("torchvision",), "onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
_INSTALL = {"torchvision": "pip install torchvision", "onnxruntime": "pip install onnx onnxruntime",
            "openvino": "pip install onnx openvino"}
# ONNX RoiAlign opset: 16 added coordinate_transformation_mode (half_pixel = aligned).
OPSET = 16

Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def load(names: list[str], device: torch.device) -> tuple[dict[str, str], list[str]]:
    """The versions of the requested peers that can run here, and a note for each one
    skipped (not installed, or a CPU-only runtime with ``--device cuda``)."""
    versions: dict[str, str] = {}
    notes: list[str] = []
    for name in names:
        if name == "reference":
            versions[name] = "roiops.reference"
            continue
        if device.type != "cpu" and name in ("onnxruntime", "openvino"):
            notes.append(f"{name} skipped: it runs on the CPU here, not on {device.type}")
            continue
        try:
            modules = [importlib.import_module(m) for m in _MODULES[name]]
        except ImportError as error:
            notes.append(f"{name} skipped: it does not import ({error}); `{_INSTALL[name]}` to compare with it")
            continue
        versions[name] = modules[-1].__version__
    return versions, notes


def op_of(module, case: Case) -> Op:
    """``case.op`` of ``module`` on (x, rois): roiops, torchvision.ops and roiops.reference
    take the same positional arguments."""
    fn = getattr(module, case.op)
    if case.op in ("roi_align", "roi_align_rotated"):
        return lambda x, r: fn(x, r, case.size, case.scale, case.sampling_ratio, case.aligned)
    if case.op == "ps_roi_align":
        return lambda x, r: fn(x, r, case.size, case.scale, case.sampling_ratio)
    return lambda x, r: fn(x, r, case.size, case.scale)


def roiops_op(case: Case) -> Op:
    import roiops

    return op_of(roiops, case)


def torchvision_has(case: Case) -> bool:
    """Whether torchvision has the case's op (it has no Precise RoI Pooling)."""
    return case.op in ("roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool")


def prroi_pool_torch(x: torch.Tensor, rois: torch.Tensor, size: int, scale: float, chunk: int = 128) -> torch.Tensor:
    """Precise RoI Pooling in plain PyTorch, the separable way: the reference's float64
    per-axis weights (roiops.reference._precise_weights) rounded to the map's dtype, then
    two contractions per chunk of RoIs (``[k, C, H, W] x [k, PH, H] x [k, PW, W]``), as an
    implementation without a kernel of its own would compute it. Chunks bound the memory
    of the gathered maps; no mask, so NaN pixels outside a bin would leak (benchmark
    inputs have none)."""
    from ..reference import _precise_weights

    H, W = x.shape[2], x.shape[3]
    c = rois[:, 1:].double() * scale
    outs = []
    for k0 in range(0, rois.shape[0], chunk):
        part = c[k0 : k0 + chunk]
        wy = _precise_weights(part[:, 1], part[:, 3], size, H)[0].to(x.dtype)
        wx = _precise_weights(part[:, 0], part[:, 2], size, W)[0].to(x.dtype)
        maps = x[rois[k0 : k0 + chunk, 0].long()]
        outs.append(torch.einsum("kcpw,kqw->kcpq", torch.einsum("kchw,kph->kcpw", maps, wy), wx))
    return torch.cat(outs) if outs else x.new_zeros(0, x.shape[1], size, size)


def roi_align_rotated_torch(x: torch.Tensor, rois: torch.Tensor, size: int, scale: float, sampling_ratio: int,
                            aligned: bool = True, chunk: int = 128) -> torch.Tensor:
    """Rotated RoIAlign in plain PyTorch, as detection code without a kernel of its own
    writes it: each RoI's turned sample grid (``sampling_ratio`` x ``sampling_ratio`` per
    bin, positions as roiops.reference's in float64) read by ``grid_sample`` (bilinear,
    ``align_corners=True``: pixel centres at integers, as roi_align's) from its image, in
    chunks of RoIs, then averaged per bin. grid_sample pads with zeros where roi_align
    clamps, so samples within a pixel outside the map read less; otherwise the op."""
    N, C, H, W = x.shape
    sr, P = sampling_ratio, size * sampling_ratio
    r = rois.double()
    off = 0.5 if aligned else 0.0
    cx, cy = r[:, 1] * scale - off, r[:, 2] * scale - off
    w, h = r[:, 3] * scale, r[:, 4] * scale
    if not aligned:
        w, h = w.clamp(min=1), h.clamp(min=1)
    t = torch.deg2rad(torch.fmod(r[:, 5], 360.0))
    f = (torch.arange(P, dtype=torch.float64) + 0.5) / P - 0.5  # sample centres as fractions of the box
    yy, xx = (h[:, None] * f)[:, :, None], (w[:, None] * f)[:, None, :]
    cos, sin = t.cos()[:, None, None], t.sin()[:, None, None]
    ys = yy * cos - xx * sin + cy[:, None, None]
    xs = yy * sin + xx * cos + cx[:, None, None]
    grid = torch.stack([xs / max(W - 1, 1) * 2 - 1, ys / max(H - 1, 1) * 2 - 1], -1).to(x.dtype)  # [K, P, P, 2]
    out = x.new_zeros(rois.shape[0], C, size, size)
    batch = r[:, 0].long()
    for b in range(N):
        index = (batch == b).nonzero().flatten()
        for part in index.split(chunk):
            # One image, its RoIs' grids stacked down the rows: [1, C, k * P, P].
            sampled = F.grid_sample(x[b : b + 1], grid[part].reshape(1, -1, P, 2), align_corners=True)
            sampled = sampled.reshape(C, part.numel(), P, P).transpose(0, 1)
            out[part] = F.avg_pool2d(sampled, sr)
    return out


def torchvision_op(case: Case) -> Op:
    import torchvision

    return op_of(torchvision.ops, case)


def reference_op(case: Case) -> Op:
    """roiops' pure-PyTorch reference; for prroi_pool (whose reference materialises every
    bin's weight of every pixel) the separable pure-PyTorch formulation prroi_pool_torch,
    for roi_align_rotated the grid_sample formulation roi_align_rotated_torch."""
    from .. import reference

    if case.op == "prroi_pool":
        return lambda x, r: prroi_pool_torch(x, r, case.size, case.scale)
    if case.op == "roi_align_rotated":
        return lambda x, r: roi_align_rotated_torch(x, r, case.size, case.scale, case.sampling_ratio, case.aligned)
    return op_of(reference, case)


def torchvision_supports(case: Case, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether torchvision's kernel on ``device`` takes ``dtype`` (its CPU kernels have no
    bfloat16); where not, the benchmark compares with its float32."""
    x = torch.zeros(1, 1, 2, 2, dtype=dtype, device=device)
    rois = torch.tensor([[0.0, 0, 0, 1, 1]], dtype=dtype, device=device)
    try:
        torchvision_op(case)(x, rois)
    except (RuntimeError, NotImplementedError):
        return False
    return True


def roi_align_onnx(case: Case, x_shape: tuple[int, ...], k: int) -> bytes:
    """A one-node ONNX model: ``RoiAlign`` (opset 16, avg) with ``case``'s size, scale,
    sampling ratio and alignment, static shapes; inputs X, rois [K, 4], batch_indices."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(
        "RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg", output_height=case.size,
        output_width=case.size, sampling_ratio=max(case.sampling_ratio, 0), spatial_scale=case.scale,
        coordinate_transformation_mode="half_pixel" if case.aligned else "output_half_pixel",
    )
    graph = helper.make_graph(
        [node], case.name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape)),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, [k, 4]),
         helper.make_tensor_value_info("batch_indices", TensorProto.INT64, [k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [k, x_shape[1], case.size, case.size])],
    )
    opset = helper.make_opsetid("", OPSET)
    model = helper.make_model(graph, opset_imports=[opset])
    # make_model stamps the onnx package's newest IR version, which a runtime older than
    # the package rejects; the IR version that introduced opset 16 is one that every
    # runtime running opset 16 accepts.
    model.ir_version = helper.find_min_ir_version_for([opset])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _feeds(x: torch.Tensor, rois: torch.Tensor) -> dict:
    return {"X": x.contiguous().numpy(), "rois": rois[:, 1:].contiguous().numpy(),
            "batch_indices": rois[:, 0].to(torch.int64).numpy()}


@dataclasses.dataclass
class Runner:
    """A prepared runtime: ``run()`` is what is timed, ``output()`` reads the last
    result. ``buffers`` keeps alive the arrays the runtime holds raw pointers into."""

    run: Callable[[], object]
    output: Callable[[], torch.Tensor]
    buffers: object


def onnxruntime_runner(case: Case, x: torch.Tensor, rois: torch.Tensor, threads: int) -> Runner:
    """ONNX Runtime's CPU RoiAlign on float32 NCHW ``x``. Inputs and the output buffer
    are bound once (I/O binding), so a run is the kernel without copies, as in a
    deployed session that reuses its buffers."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(roi_align_onnx(case, tuple(x.shape), rois.shape[0]), options,
                                   providers=["CPUExecutionProvider"])
    feeds = _feeds(x, rois)
    out = np.empty((rois.shape[0], x.shape[1], case.size, case.size), dtype=np.float32)
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, array)
    binding.bind_output("Y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    return Runner(lambda: session.run_with_iobinding(binding), lambda: torch.from_numpy(out), (feeds, out))


def openvino_runner(case: Case, x: torch.Tensor, rois: torch.Tensor, threads: int) -> Runner:
    """OpenVINO's CPU plugin on the same ONNX model, with float32 inference (its
    default is bfloat16 on CPUs that have it), inputs shared with the request and its
    output buffer reused."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(roi_align_onnx(case, tuple(x.shape), rois.shape[0]))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                                                 "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    feeds = _feeds(x, rois)
    return Runner(lambda: request.infer(feeds, share_inputs=True, share_outputs=True),
                  lambda: torch.from_numpy(request.get_output_tensor(0).data.copy()), feeds)
