"""Computes every op variant's forward, input gradient and box gradient on fixed inputs
with the CPU kernel variant this process loads, and saves them:

    ROIOPS_CPU_CAPABILITY=avx2 python tests/cpu_variant_battery.py OUT.pt
    python tests/cpu_variant_battery.py --compare GOT.pt EXPECTED.pt [VARIANT]
        # same bits as EXPECTED (and GOT computed by that variant)?

tests/test_cpu_variants.py runs it once per variant (and under qemu as older CPUs) and
compares the saved tensors bit for bit; scripts/check_dist.sh does the same with the
installed wheel. Small, so that it finishes under emulation."""

import sys

import torch

import roiops
from roiops.check import call, channels, variants


def values(shape, seed: int) -> torch.Tensor:
    """Pseudo-random values in [-1, 1) from integer arithmetic only: torch.randn rounds
    differently on CPUs of different vector levels (its transcendental functions are
    vectorized), and the inputs must be the same bits everywhere."""
    n = torch.arange(1, torch.Size(shape).numel() + 1, dtype=torch.int64)
    return (((n * 2654435761 + seed * 40503) % 2**20).double() / 2**19 - 1).reshape(shape)


def battery() -> dict:
    # 70 output channels: a full 64-channel block, then a tail shorter than any vector
    # (the position-sensitive ops read 70 of their own per bin).
    size = (3, 2)
    rois64 = torch.tensor([[0, 1.3, 2.2, 30.7, 25.1], [1, -6.3, 4.2, 20.1, 38.4], [1, 8.0, 8.0, 9.5, 8.7],
                           [0, 0.0, 0.0, 43.9, 35.9]], dtype=torch.float64)
    # roi_align_rotated's boxes: the same ones as (cx, cy, w, h), turned by fixed angles
    # (no random draw: the inputs must be the same bits on every CPU).
    rotated64 = torch.cat([rois64[:, :1], (rois64[:, 1:3] + rois64[:, 3:5]) / 2, rois64[:, 3:5] - rois64[:, 1:3],
                           torch.tensor([[30.0], [-75.5], [200.0], [0.0]], dtype=torch.float64)], 1)
    results = {"capability": roiops.cpu_capability}
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            for op, kw in variants():
                x = values((2, channels(op, 70, size), 9, 11), 1).to(dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                xk = x.clone().requires_grad_()
                boxes = rotated64 if op == "roi_align_rotated" else rois64
                rk = boxes.to(torch.float32).requires_grad_()
                out = call(roiops, op, xk, rk, size, 0.25, 2, kw)
                g = values(out.shape, 2).to(dtype)
                gx, gr = torch.autograd.grad(out, (xk, rk), g, allow_unused=True)
                name = f"{op} {sorted(kw.items())} {dtype} channels_last={channels_last}"
                results[name] = (out.detach(), gx, gr)
    return results


def assert_same_bits(results: dict, expected: dict) -> None:
    """Every tensor of ``results`` equal to ``expected``'s in bits, dtype and strides
    (the loaded variants may differ)."""
    assert results.keys() == expected.keys()
    for name, tensors in expected.items():
        if name == "capability":
            continue
        for got, want in zip(results[name], tensors, strict=True):
            assert (got is None) == (want is None), name
            if want is not None:
                assert got.dtype == want.dtype and got.stride() == want.stride(), name
                assert torch.equal(got, want), f"{name}: {(got.double() - want.double()).abs().max()}"


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        got, want = (torch.load(path, weights_only=False) for path in sys.argv[2:4])
        if len(sys.argv) > 4:
            assert got["capability"] == sys.argv[4], f"{got['capability']} variant loaded, not {sys.argv[4]}"
        assert_same_bits(got, want)
        print(f"{len(want) - 1} cases bitwise equal ({got['capability']} variant against {want['capability']})")
    else:
        torch.set_num_threads(2)
        torch.save(battery(), sys.argv[1])
