"""Timing that is honest on a shared machine: warm-up, repeats until a time budget is
spent, the median, the spread, and a flag when the spread says something else ran."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

# An interquartile range above this fraction of the median means the repeats did not
# see the same machine: on an otherwise idle CPU repeats of these kernels agree to a
# few percent, so a wider spread is another process taking cores or memory bandwidth.
NOISY_SPREAD = 0.10
# Time the process's threads spent runnable but waiting for a CPU, per timed millisecond,
# above which a timing is flagged: the kernel's threads found their cores taken. A busy
# machine can give steady but wrong times (a thread that waits a scheduler time slice
# every call), which the spread alone does not show.
CPU_WAIT_LIMIT = 0.05


@dataclasses.dataclass(frozen=True)
class Policy:
    """How often to run: ``warmup`` untimed calls, then at least ``min_repeats`` timed
    ones, more while ``budget_s`` lasts, at most ``max_repeats``."""

    warmup: int
    min_repeats: int
    max_repeats: int
    budget_s: float


FULL = Policy(warmup=1, min_repeats=5, max_repeats=25, budget_s=1.0)
QUICK = Policy(warmup=1, min_repeats=3, max_repeats=5, budget_s=0.1)
# The pure-PyTorch reference is shown for scale only: one call.
ONCE = Policy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0)


def run_delay_ms() -> float | None:
    """Milliseconds the threads of this process have spent runnable but not running
    (waiting for a CPU), from Linux's schedstat; None where it is not available."""
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/schedstat") as f:
                    total += int(f.read().split()[1])
            except FileNotFoundError:  # the thread ended meanwhile
                continue
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e6


def summarize(times_ms: list[float], cpu_wait: float | None = None) -> dict:
    """Median, min, max, relative interquartile spread, the CPU wait per timed
    millisecond and the noisy flag of a list of times in milliseconds."""
    median = statistics.median(times_ms)
    if len(times_ms) >= 2:
        q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
        spread = (q3 - q1) / median if median > 0 else 0.0
    else:
        spread = 0.0
    noisy = spread > NOISY_SPREAD or (cpu_wait or 0.0) > CPU_WAIT_LIMIT
    return dict(median_ms=round(median, 4), min_ms=round(min(times_ms), 4), max_ms=round(max(times_ms), 4),
                spread=round(spread, 4), cpu_wait=None if cpu_wait is None else round(cpu_wait, 4),
                repeats=len(times_ms), noisy=noisy, times_ms=[round(t, 4) for t in times_ms])


class Timer:
    """Times a callable on ``device``: wall clock on the CPU, CUDA events on a GPU (with
    the device synchronised around each call, so queued work is not billed to it)."""

    def __init__(self, device: torch.device, policy: Policy):
        self.device = device
        self.policy = policy

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _once(self, fn: Callable[[], object]) -> float:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    def measure(self, fn: Callable[[], object], policy: Policy | None = None) -> dict:
        """Runs ``fn`` per the policy and returns :func:`summarize` of the timed calls."""
        p = policy or self.policy
        for _ in range(p.warmup):
            fn()
        self._sync()
        times: list[float] = []
        waited = run_delay_ms()
        began = time.perf_counter()
        while len(times) < p.min_repeats or (len(times) < p.max_repeats and time.perf_counter() - began < p.budget_s):
            times.append(self._once(fn))
        after = run_delay_ms()
        # Threads that ended during the loop take their counts along: never below zero.
        cpu_wait = max(0.0, after - waited) / sum(times) if waited is not None and after is not None and sum(
            times) > 0 else None
        return summarize(times, cpu_wait)


def copy_bandwidth(timer: Timer, mib: int = 128) -> dict:
    """This machine's memory bandwidth now: ``dst.copy_(src)`` of two preallocated
    ``mib`` MiB buffers (larger than the caches), counted as read + write. Kernel
    bandwidths are reported as a fraction of it."""
    src = torch.ones(mib * 2**20 // 4, device=timer.device)
    dst = torch.empty_like(src)
    t = timer.measure(lambda: dst.copy_(src), Policy(warmup=2, min_repeats=7, max_repeats=7, budget_s=0))
    return dict(gbs=round(2 * src.numel() * 4 / (t["median_ms"] * 1e-3) / 1e9, 2), mib=mib, timing=t)


def fresh_tensor(timer: Timer, mib: int = 64) -> dict:
    """Allocating and filling a new ``mib`` MiB tensor: with the default glibc settings
    large blocks are fresh pages (page faults on first touch), with memory kept mapped
    they are reused. Shows what the allocator setting does on this machine."""
    n = mib * 2**20 // 4
    t = timer.measure(lambda: torch.empty(n, device=timer.device).fill_(1.0),
                      Policy(warmup=1, min_repeats=7, max_repeats=7, budget_s=0))
    return dict(mib=mib, timing=t)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def machine(device: torch.device, threads: int) -> dict:
    """Names the machine: CPU model, cores, caches, memory, load, the CPU kernel variant
    roiops loaded, torch and its thread count, and the GPU for ``cuda``."""
    import roiops

    cpu = platform.processor() or platform.machine()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    caches = {}
    for index in range(5):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        level, kind, size = _read(f"{base}/level"), _read(f"{base}/type"), _read(f"{base}/size")
        if level and size and kind != "Instruction":
            caches[f"L{level}{'d' if kind == 'Data' else ''}"] = size
    memory = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = dict(cpu=cpu, cores=os.cpu_count(), usable_cores=usable, caches=caches, memory=memory,
                cpu_capability=getattr(roiops, "cpu_capability", "unknown"), torch=torch.__version__,
                roiops=roiops.__version__, threads=threads, python=platform.python_version(),
                system=f"{platform.system()} {platform.release()}", device=str(device))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (runnable processes), where the OS has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
