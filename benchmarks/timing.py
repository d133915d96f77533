"""Timing helpers shared by the benchmark scripts (``scripts/benchmark_*.py``).

Speed is measured as ratios against a reference run in the same process
(never by timed assertions in tests); these helpers make every script time
the same way: wait for the device before reading the clock, report medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

import torch

__all__ = ["synchronize", "timed"]

T = TypeVar("T")


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has finished its queued work (CUDA only; a CPU is synchronous)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], T], repeats: int, device: torch.device | str) -> tuple[float, T]:
    """Median wall seconds of ``repeats`` calls of ``run()``, each between two
    :func:`synchronize` calls, and the result of the last call.

    Raises:
        ValueError: if ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"timed: repeats={repeats} must be at least 1")
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result
