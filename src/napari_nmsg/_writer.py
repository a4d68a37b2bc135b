"""npe2 writer: one image layer to an MRC file, keeping voxel size and origin.

The layer ``scale`` (Å per voxel, as the reader sets it) goes into the header's voxel size
and ``translate`` into its origin. The write is atomic and refuses to replace the file the
layer was read from.

Refusals are raised as :class:`OutputError` (an ``OSError``): napari's npe2 adapter treats
a ``ValueError`` from a writer as "this writer does not apply" and would hide the reason.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError, OutputError
from .io import write_mrc


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
    ndim = np.ndim(data)
    scale = tuple(float(v) for v in (meta.get("scale") or (1.0,) * ndim))[-3:]
    translate = tuple(float(v) for v in (meta.get("translate") or (0.0,) * ndim))[-3:]
    name = meta.get("name", "layer")
    try:
        written = write_mrc(
            path,
            np.asarray(data),
            voxel_size=scale,
            origin=translate,
            protect=_source_files(data, meta),
            labels=(f"napari-nmsg: saved from napari layer {name!r}",),
        )
    except InputError as exc:
        raise OutputError(str(exc)) from exc
    return [os.fspath(written)]
