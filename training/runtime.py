"""Process-level settings that make CPU training fast."""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["tune_cpu_allocator"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_cpu_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30,
                       top_pad: int = 1 << 28) -> bool:
    """Stop glibc's malloc from returning large blocks to the OS after each use.

    PyTorch's CPU allocator calls ``malloc``/``free`` directly; by default
    glibc serves blocks over 32 MiB with ``mmap`` and unmaps them on free,
    so every training step page-faults its logits and gradients in again.
    Raising the mmap and trim thresholds keeps that memory in the heap:
    a training step of the CPU main-job model went from 0.85 s to 0.64 s
    (2-core AMD EPYC, bf16 autocast, 3072-token batches).

    Returns:
        True when the settings were applied (Linux with glibc), else False.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = all(libc.mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold),
        (_M_TOP_PAD, top_pad)))
    if not ok:
        log.warning("mallopt refused the allocator settings; CPU training may be slower")
    return ok
