"""Give back the resident pages of memory-mapped input and output files.

Pages of a shared file mapping that were read or written stay mapped, so a process that
streams a multi-GB tomogram through memory maps grows its resident set to the file sizes
even though it holds only one row of tiles. Dropping them (``MADV_DONTNEED``) is safe for
shared mappings: the data lives on in the page cache and is re-read from there if touched.
"""

from __future__ import annotations

import mmap

import numpy as np


def _shared_mapping(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    if base is None or base.mode == "c":  # copy-on-write pages would lose their changes
        return None
    mapping = getattr(base, "_mmap", None)
    if not isinstance(mapping, mmap.mmap) or mapping.closed:
        return None
    return mapping


def release_mapped_pages(array: np.ndarray) -> bool:
    """Drop this process's resident pages of the shared file mapping behind ``array``.

    Returns False (and does nothing) for arrays that are not shared memory maps.
    """
    mapping = _shared_mapping(array)
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    mapping.madvise(mmap.MADV_DONTNEED)
    return True
