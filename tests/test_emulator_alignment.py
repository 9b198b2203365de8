"""Whether the emulator picks the vector width a GPU would (csrc/cuda/gpu_launch.h,
`packable`): a launch moves kPacked channels per thread (16 bytes: 8 float16/bfloat16,
4 float32, 2 float64) when every tensor has unit channel stride, its other strides are
multiples of the pack and its address is a multiple of 16 bytes.

Analysis. CUDA's caching allocator hands out 512-byte aligned blocks, torch's CPU
allocator 64-byte aligned ones (c10's alloc_cpu). Both are multiples of the 16-byte
pack, so for any tensor torch allocates (inputs, outputs, gradients, the tables) the
address test passes on both devices, and for a view its outcome depends only on the
view's byte offset into its storage: data_ptr % 16 == storage_offset * itemsize % 16 on
either device. The strides tests do not depend on the device. So the emulator and a GPU
choose the same width for the same tensor, and an emulator mode that aligns allocations
to 512 bytes would change no choice; gpu_launch.h needs no change. It would start to
matter only if a kernel required more than 64-byte alignment (no vector load does: 16
bytes, 32 on the newest GPUs). What differs is memory torch did not allocate: a CPU
tensor over foreign memory (torch.frombuffer or torch.from_numpy at an offset that is no
multiple of 16 bytes) takes the one-channel path in the emulator, while its .cuda() copy
(a fresh, aligned allocation) takes the packed one; the emulated tests below run both
sides of that decision and compare them with the CPU kernels, and the GPU test checks
the premise on a real allocator."""

import pytest
import torch

from roiops.check import DTYPES, TOLERANCE

pytestmark = pytest.mark.cuda_emulated

CPU = torch.ops.roiops
EMULATED = torch.ops.roiops_emulated
PACK_BYTES = 16


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_cpu_allocations_are_aligned_to_the_pack(dtype):
    """Fresh CPU tensors of any size, and the emulated ops' outputs and gradients, start
    on a 64-byte boundary (so on a pack boundary, as CUDA's 512-byte blocks do)."""
    for numel in (1, 3, 8, 17, 1000, 4099):
        assert torch.empty(numel, dtype=dtype).data_ptr() % 64 == 0
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64).to(dtype).contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 1.0, 1.0, 8.0, 7.0], [1, 0.5, 2.0, 10.0, 5.0]])
    out, arg = EMULATED.roi_align(x, rois, 1.0, 3, 3, 2, True, "max", "bilinear", True)
    gx = EMULATED._roi_align_backward(torch.ones_like(out), x, arg, rois, 1.0, 3, 3, 2, True, "max", "bilinear")
    for t in (out, arg, gx):
        assert t.data_ptr() % 64 == 0


def views(dtype):
    """channels_last maps of 16 channels: whole, and channel slices of a 24-channel map
    whose byte offset is or is not a multiple of the pack."""
    base = torch.randn(2, 24, 9, 11, dtype=torch.float64).to(dtype).contiguous(memory_format=torch.channels_last)
    size = base.element_size()
    pack = PACK_BYTES // size
    yield "whole", base[:, :16].contiguous(memory_format=torch.channels_last)
    yield "slice at a pack", base[:, pack:pack + 16]
    if pack > 1:
        yield "slice off a pack", base[:, 1:17]


def test_view_alignment_follows_the_storage_offset():
    for dtype in DTYPES:
        for name, x in views(dtype):
            offset_bytes = x.storage_offset() * x.element_size()
            assert x.data_ptr() % PACK_BYTES == offset_bytes % PACK_BYTES, (dtype, name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_views_are_aligned_like_cpu_views():
    """On a GPU the same views start at the same offset modulo the pack as on the CPU."""
    for dtype in DTYPES:
        for (name, x), (_, y) in zip(views(dtype), views(dtype), strict=True):
            base = y._base if y._base is not None else y
            cuda_view = base.cuda().as_strided(y.shape, y.stride(), y.storage_offset())
            assert cuda_view.data_ptr() % PACK_BYTES == x.data_ptr() % PACK_BYTES, (dtype, name)


def foreign(x, offset_bytes):
    """A copy of x over memory torch did not allocate (a bytearray), starting
    offset_bytes past a 64-byte boundary, in x's layout."""
    size = x.element_size()
    storage = x.untyped_storage().nbytes()
    buffer = bytearray(storage + 128)
    start = (-torch.frombuffer(buffer, dtype=torch.uint8).data_ptr()) % 64 + offset_bytes
    flat = torch.frombuffer(buffer, dtype=x.dtype, offset=start, count=storage // size)
    view = flat.as_strided(x.shape, x.stride(), x.storage_offset())
    view.copy_(x)
    return view


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("op", ["roi_align", "roi_warp", "roi_pool"])
def test_both_sides_of_the_pack_decision_match_the_cpu(op, dtype):
    """Views on and off a pack boundary, and maps over foreign memory 0 and one element
    past a 64-byte boundary, through the emulated forward and input gradient."""
    rois = torch.tensor([[0, 1.0, 1.0, 8.0, 7.0], [1, -2.0, 0.5, 12.0, 9.0], [0, 3.3, 2.2, 4.4, 8.8]])
    p = [3, 3, "max"] if op == "roi_pool" else [3, 3, 2, *([True] if op == "roi_align" else []), "avg", "bilinear"]
    maps = dict(views(dtype))
    whole = maps["whole"]
    maps["foreign, aligned"] = foreign(whole, 0)
    maps["foreign, one element off"] = foreign(whole, whole.element_size())
    assert maps["foreign, one element off"].data_ptr() % PACK_BYTES != 0
    atol, rtol = TOLERANCE[dtype]
    for name, x in maps.items():
        out, arg = getattr(EMULATED, op)(x, rois, 0.5, *p, True)
        expected, cpu_arg = getattr(CPU, op)(x, rois, 0.5, *p, True)
        torch.testing.assert_close(out, expected, atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name} forward: {m}")
        grad = torch.empty_like(expected).copy_(torch.randn(expected.shape, dtype=torch.float64))
        gx = getattr(EMULATED, f"_{op}_backward")(grad, x, cpu_arg, rois, 0.5, *p)
        egx = getattr(CPU, f"_{op}_backward")(grad, x, cpu_arg, rois, 0.5, *p)
        torch.testing.assert_close(gx, egx, atol=atol * 8, rtol=rtol,
                                   msg=lambda m, name=name: f"{name} input grad: {m}")
