"""Validate an input volume and give the engine a normalised, wedge-axis-first view of it.

The engine works in *canonical* orientation: the thickness / beam axis first, then the two
in-plane axes. ``np.moveaxis`` gives that as a view, so memory-mapped inputs stay on disk;
normalisation is applied per crop or tile as it is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..mapped_pages import release_mapped_pages

if TYPE_CHECKING:
    from .fill import Fill

MIN_EXTENT = 16
_CHUNK_VOXELS = 1 << 24  # ~64 MB of float32 per pass over a big volume
# A memory-mapped input's pages stay resident once read; they are given back once the
# reads since the last time may have mapped this much. Linux maps the 64 KiB around each
# page fault (fault-around), so a 32³ crop of a 1024-wide volume maps about 1024 rows ×
# 64 KiB = 64 MB, not the 128 KB it reads.
_RELEASE_BYTES = 1 << 27
_FAULT_AROUND_BYTES = 1 << 16


@dataclass(frozen=True)
class Normalisation:
    """``normalised = (raw - offset) / scale``, with the wedge axis moved first."""

    offset: float
    scale: float
    wedge_axis: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _slabs(length: int, plane_voxels: int) -> list[slice]:
    step = max(1, _CHUNK_VOXELS // max(plane_voxels, 1))
    return [slice(i, min(i + step, length)) for i in range(0, length, step)]


def validate_volume(array: np.ndarray) -> None:
    """Raise ``InputError`` for anything that is not a finite, non-constant 3D volume."""
    shape = getattr(array, "shape", ())
    if len(shape) == 2:
        raise InputError(f"got a 2D image of shape {shape}; NMSG needs a 3D tomogram")
    if len(shape) == 4 and shape[-1] in (3, 4):
        raise InputError(f"got an RGB(A) volume of shape {shape}; convert it to one channel")
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume (Z, Y, X), got shape {shape}")
    if min(shape) < MIN_EXTENT:
        raise InputError(
            f"volume of shape {shape} is too small: every axis needs at least {MIN_EXTENT} voxels"
        )
    kind = np.dtype(array.dtype).kind
    if kind not in "iuf":
        raise InputError(f"unsupported voxel type {array.dtype}; expected integers or floats")
    lo, hi, bad = np.inf, -np.inf, 0
    for sl in _slabs(shape[0], shape[1] * shape[2]):
        chunk = np.asarray(array[sl], dtype=np.float64)
        finite = np.isfinite(chunk)
        bad += int(finite.size - finite.sum())
        if finite.any():
            lo, hi = min(lo, chunk[finite].min()), max(hi, chunk[finite].max())
        release_mapped_pages(array)
    if bad:
        raise InputError(f"volume has {bad} NaN/Inf voxels; fix or mask them before denoising")
    if hi - lo <= 0 or not np.isfinite(hi - lo):
        raise InputError("volume is constant: there is nothing to denoise")


def validate_background(mask: Any, shape: tuple[int, ...]) -> None:
    """Raise ``InputError`` unless ``mask`` marks some voxels of a volume of ``shape``."""
    mask_shape = tuple(getattr(mask, "shape", ()))
    if mask_shape != tuple(shape):
        raise InputError(
            f"the background mask has shape {mask_shape}, the tomogram {tuple(shape)}: "
            "mark the background on the tomogram itself"
        )
    if not any(np.asarray(mask[sl]).any() for sl in _slabs(shape[0], shape[1] * shape[2])):
        raise InputError("the background mask marks no voxel: mark regions of ice or vacuum")


def detect_wedge_axis(shape: tuple[int, ...]) -> int:
    """The thickness axis: the smallest extent (Z for most tomograms, Y for some IMOD ones)."""
    return int(np.argmin(shape))


def fit_normalisation(
    array: np.ndarray,
    wedge_axis: int | None = None,
    *,
    sample: int = 1 << 21,
    seed: int = 0,
    fill: Fill | None = None,
) -> Normalisation:
    """Median / MAD on a random voxel sample: robust to gold beads and carbon edges.

    With ``fill``, fill voxels are left out of the statistics and the wedge axis is the
    smallest extent of the data inside the fill: a frame can pad the thin axis past another.
    """
    extent = array.shape if fill is None else fill.data_extent
    axis = detect_wedge_axis(extent) if wedge_axis is None else wedge_axis
    rng = np.random.default_rng(seed)
    n = int(np.prod(array.shape))
    # every voxel of a small volume, else a sorted random sample; read slab by slab, so any
    # array that slices like numpy (memory map, zarr, dask) is never loaded whole
    idx = np.arange(n) if n <= sample else np.sort(rng.choice(n, size=sample, replace=False))
    plane = array.shape[1] * array.shape[2]
    values = np.empty(len(idx), dtype=np.float64)
    for sl in _slabs(array.shape[0], plane):
        lo, hi = np.searchsorted(idx, [sl.start * plane, sl.stop * plane])
        if hi > lo:
            values[lo:hi] = np.asarray(array[sl]).reshape(-1)[idx[lo:hi] - sl.start * plane]
        release_mapped_pages(array)
    if fill is not None:
        # by value, not by neighbourhood: a data voxel equal to a fill value is rare
        values = values[~np.isin(values, fill.values)]
        if not values.size:
            raise InputError("the voxel sample holds only fill: too little data to normalise")
    median = float(np.median(values))
    scale = 1.4826 * float(np.median(np.abs(values - median)))
    if not scale > 0:
        scale = float(values.std()) or 1.0
    return Normalisation(median, scale, axis)


class NormalisedVolume:
    """Read-only canonical, normalised access to a (possibly memory-mapped) raw volume.

    Fill voxels (``fill``, see ``engine.fill``) read as 0, the data's median: the fill value
    is arbitrary (0 beside data of mean 100 is a step of many noise levels), and the
    network must not depend on it.
    """

    def __init__(
        self,
        raw: np.ndarray,
        normalisation: Normalisation,
        fill: Fill | None = None,
        background: Any = None,
    ):
        self.raw = raw
        self.normalisation = normalisation
        self.fill = fill
        self.canonical = canonical_view(raw, normalisation.wedge_axis)
        # where the user marked signal-free ice or vacuum (non-zero), raw axes, or None
        self._background = (
            None if background is None else canonical_view(background, normalisation.wedge_axis)
        )
        self.shape: tuple[int, int, int] = tuple(self.canonical.shape)
        self._unreleased = 0  # bytes the reads may have mapped since pages were given back

    def read(self, region: tuple[slice, ...] = (slice(None),) * 3) -> np.ndarray:
        """The normalised float32 values of a canonical region.

        Training reads thousands of crops all over the volume: the resident pages of a
        memory-mapped input are given back every so often, so a tomogram larger than RAM
        is not pulled into it by the end of training.
        """
        block = np.asarray(self.canonical[region], dtype=np.float32)
        rows = block.size // max(1, block.shape[-1]) if block.ndim else 1
        self._unreleased += max(block.nbytes, rows * _FAULT_AROUND_BYTES)
        if self._unreleased >= _RELEASE_BYTES:
            release_mapped_pages(self.raw)
            self._unreleased = 0
        norm = self.normalisation
        block = ((block - np.float32(norm.offset)) / np.float32(norm.scale)).astype(np.float32)
        if self.fill is not None:
            block[self.fill.mask(self.canonical, region)] = 0.0
        return block

    def fill_mask(self, region: tuple[slice, ...]) -> np.ndarray | None:
        """The fill voxels of a canonical region; None when the volume has no fill."""
        return None if self.fill is None else self.fill.mask(self.canonical, region)

    @property
    def has_background(self) -> bool:
        return self._background is not None

    def background_mask(self, region: tuple[slice, ...]) -> np.ndarray:
        """The voxels of a canonical region the user marked as background."""
        if self._background is None:
            raise ValueError("this volume has no marked background")
        return np.asarray(self._background[region]) != 0

    @property
    def data_box(self) -> tuple[slice, slice, slice]:
        """The canonical bounding box of the non-fill voxels (all of it without fill)."""
        if self.fill is None:
            return tuple(slice(0, n) for n in self.shape)
        axis = self.normalisation.wedge_axis
        return tuple(self.fill.data_box[a] for a in (axis, *(a for a in range(3) if a != axis)))

    def to_raw_scale(self, block: np.ndarray) -> np.ndarray:
        norm = self.normalisation
        return (block * np.float32(norm.scale) + np.float32(norm.offset)).astype(np.float32)


def canonical_view(array: Any, wedge_axis: int) -> Any:
    """The wedge-axis-first view of an array (reads and writes go through to ``array``).

    A numpy array or memory map gets ``np.moveaxis``; any other array that slices like
    numpy (zarr, dask, h5py) a region-by-region view, as ``np.moveaxis`` would load it.
    """
    if wedge_axis == 0:
        return array
    if isinstance(array, np.ndarray):
        return np.moveaxis(array, wedge_axis, 0)
    return AxisFirst(array, wedge_axis)


class AxisFirst:
    """``array`` with ``axis`` moved first, for arrays that are not numpy's: each region
    is read or written through to ``array`` on its own."""

    def __init__(self, array: Any, axis: int):
        self.array, self.axis = array, axis
        self._order = (axis, *(a for a in range(3) if a != axis))
        self.shape: tuple[int, int, int] = tuple(array.shape[a] for a in self._order)
        self.dtype, self.ndim = array.dtype, 3

    def _original(self, region: Any) -> tuple[slice, ...]:
        region = region if isinstance(region, tuple) else (region,)
        region = (*region, *(slice(None),) * (3 - len(region)))
        out: list[Any] = [None] * 3
        for canonical_axis, original_axis in enumerate(self._order):
            out[original_axis] = region[canonical_axis]
        return tuple(out)

    def __getitem__(self, region: Any) -> np.ndarray:
        return np.moveaxis(np.asarray(self.array[self._original(region)]), self.axis, 0)

    def __setitem__(self, region: Any, values: np.ndarray) -> None:
        self.array[self._original(region)] = np.moveaxis(np.asarray(values), 0, self.axis)
