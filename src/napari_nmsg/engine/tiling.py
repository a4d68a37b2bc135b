"""Tiled, blended inference that reads and writes a Z-row of tiles at a time.

Tiles overlap and are blended with weights that ramp down towards tile borders, so no seams
show. Only one row of tiles along the thickness axis is held in memory (one accumulator of
tile × Y × X floats): a row's finished slices are flushed to the (possibly memory-mapped)
output before the next row starts, which bounds RAM for multi-GB tomograms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Protocol

import numpy as np
import torch

from .events import EventStream, Progress

# (a batch of tiles, the corner of each tile in the source) -> their predictions
Predictor = Callable[[torch.Tensor, list[tuple[int, int, int]]], torch.Tensor]

_FLUSH_BYTES = 64 * 2**20  # finished planes are normalised and written in chunks this big


class VolumeSource(Protocol):
    """What tiling reads from: a canonical shape and a normalised ``read(region)``."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def read(self, region: tuple[slice, ...]) -> np.ndarray: ...


@dataclass
class Window:
    """A canonical sub-region of a source, itself readable as a source."""

    source: VolumeSource
    region: tuple[slice, slice, slice]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.region)

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        shifted = tuple(
            slice(w.start + r.start, w.start + r.stop)
            for w, r in zip(self.region, region, strict=True)
        )
        return self.source.read(shifted)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start indices covering ``[0, length)``; the last tile is shifted back to fit."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    return sorted({*range(0, length - tile, step), length - tile})


@dataclass(frozen=True)
class AxisTiles:
    """How one axis is cut: tile size, blended overlap and the tiles' starts."""

    size: int
    overlap: int
    starts: list[int]


def tile_grid(shape: tuple[int, ...], tile: int, overlap: int, multiple: int) -> list[AxisTiles]:
    """Per-axis tiling with at most ``tile`` voxels per tile edge.

    An axis shorter than ``tile`` is one tile (padded to ``multiple``). A longer one gets as
    few tiles as ``tile`` needs, each shrunk to the smallest multiple of ``multiple`` that
    still covers the axis with them: 64-voxel tiles overlapping by 16 cover 128 voxels in
    three, and so do 56-voxel ones, which process a third fewer voxels over three axes.
    """
    axes = []
    for length in shape:
        size = min(tile, _round_up(length, multiple))
        if length > size:
            clamped = min(overlap, size // 2)
            count = len(tile_starts(length, size, clamped))
            size = min(size, _round_up(-(-(length - clamped) // count) + clamped, multiple))
        size_overlap = min(overlap, size // 2)
        axes.append(AxisTiles(size, size_overlap, tile_starts(length, size, size_overlap)))
    return axes


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1D weights: 1 inside, a sin² ramp over ``overlap`` voxels at each end, never 0."""
    weights = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        weights[:overlap] = ramp
        weights[-overlap:] = np.minimum(weights[-overlap:], ramp[::-1])
    return np.maximum(weights, 1e-3)


def coverage(length: int, window: np.ndarray, starts: list[int]) -> np.ndarray:
    """Sum of the 1D blend windows placed at ``starts``, clipped to ``[0, length)``."""
    total = np.zeros(length, dtype=np.float32)
    for start in starts:
        n = min(len(window), length - start)
        total[start : start + n] += window[:n]
    return total


def _read_padded(source: VolumeSource, corner: tuple[int, ...], size: tuple[int, ...]):
    region = tuple(
        slice(c, min(c + t, s)) for c, t, s in zip(corner, size, source.shape, strict=True)
    )
    block = source.read(region)
    pad = [(0, t - b) for t, b in zip(size, block.shape, strict=True)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="reflect" if min(block.shape) > 1 else "edge")
    return block, tuple(r.stop - r.start for r in region)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def iter_predict_tiled(
    predict: Predictor,
    source: VolumeSource,
    write: Callable[[slice, np.ndarray], None],
    *,
    tile: int,
    overlap: int,
    batch: int,
    multiple: int,
    device: torch.device,
    stage: str = "denoise",
    release_input: Callable[[], None] | None = None,
) -> EventStream[None]:
    """Predict ``source`` tile by tile; ``write(z_slice, block)`` receives finished slabs.

    ``block`` is a view into a reused buffer: ``write`` must copy what it keeps.
    ``release_input`` is called whenever the tiles move on to a new band along Y, when the
    input pages read so far will not be needed again soon (memory-mapped input).
    """
    shape = source.shape
    grid = tile_grid(shape, tile, overlap, multiple)
    size = [axis.size for axis in grid]
    starts = [axis.starts for axis in grid]
    w = [blend_window(axis.size, axis.overlap) for axis in grid]
    weights = w[0][:, None, None] * w[1][None, :, None] * w[2][None, None, :]
    # The tiles form a full grid and the weights are separable, so the weight sum is the
    # outer product of three 1D coverages: no volume-sized weight accumulator is needed.
    cover = [
        coverage(n, window, axis_starts)
        for n, window, axis_starts in zip(shape, w, starts, strict=True)
    ]
    plane_cover = np.outer(cover[1], cover[2])
    acc = np.zeros((size[0], shape[1], shape[2]), dtype=np.float32)
    planes_per_write = max(1, _FLUSH_BYTES // max(1, acc[0].nbytes))
    base = 0
    plane_tiles = list(product(starts[1], starts[2]))
    total = len(starts[0]) * len(plane_tiles)
    done = 0

    def flush(upto: int) -> None:
        """Normalise and write planes ``[base, upto)`` in place, then shift the rest down."""
        nonlocal base
        n = upto - base
        for first in range(0, n, planes_per_write):
            last = min(n, first + planes_per_write)
            block = acc[first:last]
            block /= cover[0][base + first : base + last, None, None]
            block /= plane_cover
            write(slice(base + first, base + last), block)
        for i in range(len(acc) - n):  # plane by plane: no temporary copy of the row
            acc[i] = acc[i + n]
        acc[len(acc) - n :] = 0.0
        base = upto

    band = None
    for z in starts[0]:
        if z > base:
            flush(z)
        for group in _batches(plane_tiles, batch):
            if release_input is not None and (z, group[0][0]) != band:
                release_input()
                band = (z, group[0][0])
            blocks, extents = zip(
                *(_read_padded(source, (z, y, x), size) for y, x in group), strict=True
            )
            inputs = torch.from_numpy(np.stack(blocks)[:, None]).to(device)
            corners = [(z, y, x) for y, x in group]
            outputs = predict(inputs, corners)[:, 0].float().cpu().numpy()
            for (y, x), out, ext in zip(group, outputs, extents, strict=True):
                sub = (slice(0, ext[0]), slice(0, ext[1]), slice(0, ext[2]))
                acc[sub[0], y : y + ext[1], x : x + ext[2]] += (out * weights)[sub]
            done += len(group)
            yield Progress(stage, done, total)
    flush(shape[0])
