"""Find signal-free (ice / background) boxes in a tomogram and cut noise patches from them.

Flat background is where a low-passed copy of the volume varies least: the low-pass keeps
structure and removes most noise, so low local variance means "no structure here".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .volume import NormalisedVolume, _slabs

MIN_PATCHES = 8
MIN_PATCH_SIZE = 8
_SCORE_VOXELS = 1 << 24  # score on a binned copy above this many voxels


@dataclass
class NoisePatches:
    """Mean-subtracted noise patches ``(N, p, p, p)`` in normalised units, canonical axes."""

    patches: np.ndarray
    corners: np.ndarray  # (N, 3) canonical corners
    patch_size: int
    note: str  # what was found, and any fallback taken

    def split(self, held_out_fraction: float, rng: np.random.Generator):
        """(train, held-out) patch arrays; held-out ones are only used to measure fidelity."""
        order = rng.permutation(len(self.patches))
        n_held = max(1, round(len(order) * held_out_fraction))
        return self.patches[order[n_held:]], self.patches[order[:n_held]]


def _local_scores(volume: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """(variance of the low-passed volume, energy of the high-passed one) around each voxel."""
    low = ndimage.gaussian_filter(volume, sigma=max(1.0, box / 8))
    mean = ndimage.uniform_filter(low, size=box, mode="reflect")
    mean_sq = ndimage.uniform_filter(low * low, size=box, mode="reflect")
    high = ndimage.uniform_filter((volume - low) ** 2, size=box, mode="reflect")
    return mean_sq - mean * mean, high


def _bin_means(
    read: Callable[[tuple[slice, ...]], np.ndarray], shape: tuple[int, ...], factor: int
) -> np.ndarray:
    """Means over ``factor``³ bins (partial bins at the far ends dropped), read in slabs
    along axis 0: the full-resolution volume (and its fill mask) is never held whole."""
    bins = [s // factor for s in shape]
    plane = slice(0, bins[1] * factor), slice(0, bins[2] * factor)
    parts = []
    for rows in _slabs(bins[0], bins[1] * bins[2] * factor**3):
        block = read((slice(rows.start * factor, rows.stop * factor), *plane))
        parts.append(
            block.reshape(-1, factor, bins[1], factor, bins[2], factor).mean(axis=(1, 3, 5))
        )
    return np.concatenate(parts)


def _binned(volume: NormalisedVolume) -> tuple[np.ndarray, int]:
    factor = 1
    while np.prod(volume.shape) / factor**3 > _SCORE_VOXELS:
        factor += 1
    if factor == 1:
        return volume.read(), 1
    return _bin_means(volume.read, volume.shape, factor), factor


def _select(
    flatness: np.ndarray,
    noise_energy: np.ndarray,
    size: int,
    bounds: list[tuple[int, int]],
    count: int,
    excluded_bins: np.ndarray | None = None,
    marked: bool = False,
) -> list[tuple[int, ...]]:
    """Flattest corners in ``bounds`` on a half-overlapping grid, from the flattest quarter.

    Boxes whose high-frequency energy is far from typical are skipped: at the edges of a
    reconstruction fewer tilts contribute and the noise is weaker than elsewhere. Boxes that
    reach into ``excluded_bins`` are no candidates: fill (the flattest region of all,
    noiseless, which would also set the typical energy), or what the user did not mark as
    background. Inside a ``marked`` background every box is a candidate, flattest first:
    the user knows where the ice is, and the whole point is to overrule the scores.
    """
    stride = max(1, size // 2)
    ranges = []
    for lo, hi in bounds:
        if hi < lo:
            return []
        ranges.append(np.unique(np.r_[np.arange(lo, hi + 1, stride), hi]))
    grid = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    if excluded_bins is not None:
        # window [corner, corner + size + 1): a full-resolution box may end inside one bin more
        reach = size + 1
        touched = ndimage.maximum_filter(
            excluded_bins, reach, mode="constant", origin=-(reach // 2)
        )
        grid = grid[~touched[tuple(grid.T)]]
        if not len(grid):
            return []
    centres = tuple((grid + size // 2).T)
    values = flatness[centres]
    if not marked:
        energy = noise_energy[centres]
        typical = np.abs(energy / np.median(energy) - 1) < 0.15
        grid, values = grid[typical], values[typical]
    order = np.argsort(values, kind="stable")
    keep = order if marked else order[: max(MIN_PATCHES, len(order) // 4)]
    return [tuple(int(v) for v in grid[i]) for i in keep[:count]]


def _box(corner: tuple[int, ...], size: int) -> tuple[slice, ...]:
    return tuple(slice(c, c + size) for c in corner)


def _excluded_bins(volume: NormalisedVolume, factor: int) -> np.ndarray | None:
    """Bins no noise patch may touch: any fill, and what is not marked background."""
    excluded = None
    if volume.fill is not None:
        excluded = _bin_means(volume.fill_mask, volume.shape, factor) > 0
    if volume.has_background:
        unmarked = _bin_means(volume.background_mask, volume.shape, factor) < 1
        excluded = unmarked if excluded is None else excluded | unmarked
    return excluded


def _usable(volume: NormalisedVolume, corner: tuple[int, ...], size: int) -> bool:
    """Exactly, at full resolution: no fill in the box, and all of it marked background."""
    box = _box(corner, size)
    if volume.fill is not None and volume.fill_mask(box).any():
        return False
    return not volume.has_background or bool(volume.background_mask(box).all())


def extract_noise_patches(
    volume: NormalisedVolume, patch_size: int, max_patches: int
) -> NoisePatches:
    """Cut up to ``max_patches`` flat-background patches, shrinking them if too few fit.

    Where the user marked the background (``volume.has_background``), only from there.
    """
    binned, factor = _binned(volume)
    excluded = _excluded_bins(volume, factor)
    marked = volume.has_background
    data = volume.data_box  # the reconstruction inside any fill frame
    extent = [d.stop - d.start for d in data]
    size = patch_size
    notes = []
    while True:
        # thickness axis: off the reconstruction's borders; in plane: off its weaker edges
        margins = (max(1, extent[0] // 32), extent[1] // 16, extent[2] // 16)
        corners = []
        if all(e - 2 * m >= size for e, m in zip(extent, margins, strict=True)):
            box = max(2, size // factor)
            flatness, energy = _local_scores(binned, box)
            # scores on the binned grid, corners in full-resolution voxels
            bounds = [
                (-(-(d.start + m) // factor), d.stop // factor - box - -(-m // factor))
                for d, m in zip(data, margins, strict=True)
            ]
            corners = [
                tuple(min(c * factor, s - size) for c, s in zip(corner, volume.shape, strict=True))
                for corner in _select(flatness, energy, box, bounds, max_patches, excluded, marked)
            ]
            corners = [c for c in corners if _usable(volume, c, size)]
        if len(corners) >= MIN_PATCHES or size // 2 < MIN_PATCH_SIZE:
            break
        notes.append(f"only {len(corners)} patches of {size}³ fit; retrying with {size // 2}³")
        if marked:  # the user can fix this: say how
            notes[-1] += (
                f" (noise correlations longer than {size // 2} voxels are lost: mark regions at "
                f"least {size} voxels across in every direction)"
            )
        size //= 2
    where = "the marked background" if marked else "flat background"
    if len(corners) < 2:
        if marked:
            raise InputError(
                f"the marked background holds no {size}³ box away from the volume's edges: "
                "mark larger regions of ice or vacuum"
            )
        raise InputError(
            f"found no signal-free region for noise patches in a volume of shape {volume.shape}"
        )
    patches = np.stack([volume.read(_box(corner, size)) for corner in corners])
    patches -= patches.mean(axis=(1, 2, 3), keepdims=True)
    notes.insert(0, f"{len(corners)} noise patches of {size}³ from {where}")
    if volume.fill is not None:
        share = volume.fill.voxels / np.prod(volume.shape)
        notes.insert(1, f"{share:.0%} of the volume is fill {volume.fill.values}, left out")
    return NoisePatches(patches.astype(np.float32), np.array(corners), size, "; ".join(notes))


def random_boxes(
    source: NormalisedVolume, size: int, count: int, rng: np.random.Generator
) -> NoisePatches:
    """Up to ``count`` mean-free ``size``³ boxes at random places in the data, none reaching
    into fill: the volume's noise and signal together, with no choice of place to bias them."""
    box = source.data_box
    boxes, corners = [], []
    if all(s.stop - s.start >= size for s in box):
        for _ in range(4 * count):  # where fill is patchy some draws miss
            corner = [int(rng.integers(s.start, s.stop - size + 1)) for s in box]
            region = tuple(slice(c, c + size) for c in corner)
            fill = source.fill_mask(region)
            if fill is not None and fill.any():
                continue
            block = source.read(region).astype(np.float32)
            boxes.append(block - block.mean())
            corners.append(corner)
            if len(boxes) == count:
                break
    found = np.stack(boxes) if boxes else np.empty((0, size, size, size), np.float32)
    return NoisePatches(found, np.array(corners, int).reshape(-1, 3), size, "random boxes")
