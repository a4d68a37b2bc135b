"""npe2 reader: MRC-family tomograms as memory-mapped image layers.

Voxel size (Å, from the header) becomes the layer ``scale``, the header origin its
``translate``, and the whole header is kept in the layer ``metadata``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._layers import display_limits
from .io import read_volume

READER_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs")

PathLike = str | os.PathLike
LayerData = tuple[Any, dict[str, Any], str]


def _paths(path: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        return [Path(path)]
    return [Path(p) for p in path]


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerData]] | None:
    """Return :func:`read_tomograms` if every path is an MRC-family file, else ``None``."""
    paths = _paths(path)
    if not paths or any(p.suffix.lower() not in READER_SUFFIXES for p in paths):
        return None
    return read_tomograms


def read_tomograms(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """One image layer per file: ``(memmap data, {scale, translate, metadata, ...}, "image")``.

    Errors (missing, truncated or corrupt files) raise ``InputError`` with a one-line reason.
    """
    layers = []
    for p in _paths(path):
        tomogram = read_volume(p)
        kwargs = {
            "name": p.stem,
            # napari needs a positive scale: an unknown voxel size (0) is shown as 1
            "scale": tuple(v if v > 0 else 1.0 for v in tomogram.voxel_size),
            "translate": tomogram.origin,
            "metadata": tomogram.metadata,
            "colormap": "gray",
        }
        if tomogram.data.ndim >= 2:
            kwargs["contrast_limits"] = display_limits(tomogram.data)
        layers.append((tomogram.data, kwargs, "image"))
    return layers
