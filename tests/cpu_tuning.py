"""The loaded CPU kernel module's tuning constants and scheduling-tier counters
(csrc/cpu/tuning.h, csrc/cpu/tier_counts.h), so that tests size their cases from the
constants and check that a case reached the tier it was sized for."""

import contextlib
import importlib

import roiops

MODULE = importlib.import_module(f"roiops._cpu_{roiops.cpu_capability}")
# Name -> value of every CPU tuning constant, and the streamed-output threshold this
# machine's caches give (streamed_output_bytes).
TUNING: dict[str, int] = MODULE.tuning


@contextlib.contextmanager
def tier_counts():
    """Counts the CPU kernels' scheduling tiers while the block runs; the dict it yields
    holds {tier: count} once the block ends."""
    counts: dict[str, int] = {}
    MODULE.tier_counts(True)
    try:
        yield counts
    finally:
        counts.update(MODULE.tier_counts(False))
