import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Kernel calls are fast but the reference materialises every sample; keep examples
# small and the budget fixed so the suite stays well inside CI's time.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("ROIOPS_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("ci")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _ieee_subnormals():
    """Keep subnormal floats for every test. torch.compile's CPU kernels in older torch
    (2.4) are linked with -ffast-math, whose start-up code turns on flush-to-zero for the
    whole process once a compiled kernel loads; the contract under test includes
    subnormals, and hypothesis refuses to draw floats without them."""
    torch.set_flush_denormal(False)
    yield


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cuda_emulated: the CUDA kernels run on the CPU by the grid emulator (no GPU needed)",
    )
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one")
    config.addinivalue_line(
        "markers",
        "slow: an end-to-end run (benchmark, training, qemu, python -m roiops check); "
        "`pytest -m \"not slow\"` runs the fast suite, the default run includes them",
    )
