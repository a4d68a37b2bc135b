"""glibc heap settings for torch in a Dask worker.

Dask's nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory
goes back to the OS. Setting that variable also turns off glibc's dynamic mmap threshold:
every allocation over 128 KiB, which is every activation tensor of a training step, becomes
a fresh ``mmap`` that the kernel zero-fills page by page and that ``free`` unmaps again.
Measured on 2 cores: a 64³ fit took 1.6× as long in a worker, with 6× the system time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for the dynamic threshold on 64-bit
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD  # what the dynamic rule would set beside it
_GLIBC_DEFAULT = 128 * 2**10  # both thresholds
_FIXED_BY_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def _environment_threshold(name: str, default: int) -> int:
    with contextlib.suppress(ValueError):
        return int(os.environ.get(name, default))
    return default


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    with contextlib.suppress(OSError):
        return ctypes.CDLL("libc.so.6")
    return None


@contextlib.contextmanager
def tensor_friendly_heap() -> Iterator[None]:
    """While a task runs, serve tensors from the heap again (only where the environment
    fixed glibc's thresholds, as Dask's does); afterwards give the freed memory back and
    restore the environment's thresholds for the worker's other tasks."""
    libc = _glibc() if any(os.environ.get(k) for k in _FIXED_BY_ENVIRONMENT) else None
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    try:
        yield
    finally:
        if libc is not None:
            libc.malloc_trim(0)
            for option, name in (
                (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
                (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
            ):
                libc.mallopt(option, _environment_threshold(name, _GLIBC_DEFAULT))
