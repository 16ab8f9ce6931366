"""glibc's allocator, set once per compute process (training workers, transform and feature actors).

Why: torch's CPU tensors come from malloc. glibc serves large blocks with mmap and hands freed
memory back to the kernel (munmap, or trimming the heap's top), so a training step that frees
its activations and allocates them again the next step faults every page in afresh: 36,000
minor page faults and 55 ms of kernel time per `cpu-demo` step of ~230 ms on 2 AVX2 cores
(measured by `tests/benchmarks/test_bench_training.py::test_keep_freed_memory_side_by_side`).
Serving blocks up to glibc's largest mmap threshold from the heap and never trimming it keeps
freed pages mapped for the next step: the faults go to ~0 and the step runs ~1.17x faster.
The cost is that a process keeps its peak heap until it exits, which is what a worker that
repeats one shape of work needs anyway.

The same setting through the environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
GLIBC_TUNABLES) reaches only processes started after it is set; mallopt reaches this one, which
is what a Ray worker or an in-process run is by the time it knows it will compute.
"""
from __future__ import annotations

import ctypes
import os
import platform

from infra.settings import get_settings

# mallopt's parameter numbers (<malloc.h>)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit); blocks above it
# stay mmapped, which the steps measured here never allocate.
MMAP_THRESHOLD = 32 * 2**20
# mallopt's value is a C int: 2 GiB - 1 is "never" for a heap top this pipeline frees.
TRIM_THRESHOLD = 2**31 - 1
# A user who tunes glibc's allocator through the environment keeps their own choice.
_USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_state: str | None = None


def keep_freed_memory() -> str:
    """Keep freed memory mapped in this process (see the module docstring) unless
    REINSTRUMENT_KEEP_FREED_MEMORY=0. Idempotent; returns what was done, for the log: "kept", or
    why not ("off", "not glibc", "the environment's own")."""
    global _state
    if _state is not None:
        return _state
    if not get_settings().keep_freed_memory:
        _state = "off"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _state = "not glibc"  # musl, macOS and Windows allocators have no such switch
    elif any(v in os.environ for v in _USER_VARS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        _state = "the environment's own"
    else:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _state = "kept" if ok else "refused by mallopt"
    return _state
