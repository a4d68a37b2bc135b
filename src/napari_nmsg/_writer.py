"""npe2 writer: one image layer to an MRC file, keeping voxel size and origin.

The layer ``scale`` (Å per voxel, as the reader sets it) goes into the header's voxel size
and ``translate`` into its origin. The write is atomic and refuses to replace the file the
layer was read from. It streams slab by slab into a memory-mapped file, so saving a
denoised layer (itself a memory-mapped scratch file) or a lazy one needs no RAM of its size.

Refusals are raised as :class:`OutputError` (an ``OSError``): napari's npe2 adapter treats
a ``ValueError`` from a writer as "this writer does not apply" and would hide the reason.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError, OutputError
from .io import mrc_output
from .mapped_pages import release_mapped_pages

_SLAB_VOXELS = 1 << 24  # ~64 MB of float32 per copy


def _source_files(data: Any, meta: dict[str, Any]) -> tuple[str, ...]:
    """Files the layer's data came from: the reader's ``source`` and any memory map."""
    sources = []
    source = (meta.get("metadata") or {}).get("source")
    if source:
        sources.append(str(source))
    filename = getattr(data, "filename", None)
    if filename:
        sources.append(str(filename))
    return tuple(sources)


def write_single_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a 3D image layer as float32 MRC; return ``[path]`` (napari writer protocol)."""
    shape = tuple(np.shape(data))
    if len(shape) != 3:
        raise OutputError(f"can only write 3D volumes, got shape {shape}")
    scale = tuple(float(v) for v in (meta.get("scale") or (1.0,) * 3))[-3:]
    translate = tuple(float(v) for v in (meta.get("translate") or (0.0,) * 3))[-3:]
    name = meta.get("name", "layer")
    labels = (f"napari-nmsg: saved from napari layer {name!r}",)
    try:
        with mrc_output(
            path, shape, scale, translate, protect=_source_files(data, meta), labels=labels
        ) as out:
            step = max(1, _SLAB_VOXELS // max(1, shape[1] * shape[2]))
            for z in range(0, shape[0], step):
                out[z : z + step] = np.asarray(data[z : z + step], dtype=np.float32)
                release_mapped_pages(out)
                release_mapped_pages(data)
    except InputError as exc:
        raise OutputError(str(exc)) from exc
    return [os.fspath(path)]
