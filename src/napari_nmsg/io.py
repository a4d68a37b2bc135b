"""Read and write tomograms (MRC family via mrcfile, TIFF via tifffile; OME-Zarr in
``zarr_io``).

Arrays are ``(Z, Y, X)``; voxel sizes and origins are ``(z, y, x)`` in Å. MRC files are
memory-mapped so multi-GB volumes are never loaded whole. Writes are atomic (temporary file
in the target folder, then rename) and refuse to replace any of the inputs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from .errors import InputError, OutputError
from .mapped_pages import release_mapped_pages

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)
TOMOGRAM_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES + ZARR_SUFFIXES  # what read_volume reads
MODEL_SUFFIXES = (".pt", ".pth")
_STATS_VOXELS = 1 << 23  # voxels per slab when computing header statistics


@dataclass
class Tomogram:
    """A volume with the physical metadata that must survive denoising.

    ``data`` is a numpy array, a memory map or (OME-Zarr) a zarr array: anything with
    ``shape``, ``dtype``, ``ndim`` and numpy slicing that returns numpy arrays.
    """

    data: np.ndarray
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    metadata: dict[str, Any] = field(default_factory=dict)


def _header_dict(header: np.recarray) -> dict[str, Any]:
    """The MRC header as plain Python values (JSON-friendly, fit for layer metadata)."""
    out: dict[str, Any] = {}
    for name in header.dtype.names:
        value = header[name]
        if name == "label":
            out[name] = [bytes(v).rstrip(b"\0 ").decode("latin-1") for v in np.ravel(value)]
        elif value.dtype.names:
            out[name] = [float(value[n]) for n in value.dtype.names]
        elif value.dtype.kind in "SV":
            out[name] = bytes(value).decode("latin-1", "replace")
        else:
            out[name] = value.tolist()
    return out


def _decimal(value: np.floating) -> float:
    """A float32 header value as the shortest decimal that is that float32 (13.48, not
    13.479999542236328): the value its writer meant, and what the outputs' metadata says."""
    return float(str(np.float32(value)))


def read_mrc(path: str | os.PathLike) -> Tomogram:
    """Memory-map an MRC file; slightly broken headers are accepted with a warning."""
    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)  # how mrcfile reports the header
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    problems = "; ".join(str(w.message) for w in caught if w.category is RuntimeWarning)
    for w in caught:  # not the file's: e.g. numpy 2.5 deprecating how mrcfile sets dtypes
        if w.category is not RuntimeWarning:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if mrc.data is None:
        mrc.close()
        raise InputError(f"cannot read {path}: truncated or corrupt MRC ({problems})")
    if problems:
        warnings.warn(f"{path.name}: {problems}", stacklevel=2)
    header = mrc.header
    voxel = mrc.voxel_size
    # 0 means unknown (IsoNet writes such files): kept, so that outputs say so too
    voxel_size = tuple(max(_decimal(v), 0.0) for v in (voxel.z, voxel.y, voxel.x))
    origin = tuple(_decimal(header.origin[a]) for a in ("z", "y", "x"))
    metadata = {"mrc_header": _header_dict(header), "source": str(path)}
    return Tomogram(mrc.data, voxel_size, origin, metadata)


def read_tiff(path: str | os.PathLike) -> Tomogram:
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            voxel_size = (1.0, 1.0, 1.0)
            meta = tif.imagej_metadata or {}
            page = tif.pages[0]
            xres = page.tags.get("XResolution")
            if xres is not None and xres.value[0]:
                x = xres.value[1] / xres.value[0]
                unit = meta.get("unit", "")
                factor = {"nm": 10.0, "nanometer": 10.0, "micron": 1e4, "um": 1e4}.get(unit, 1.0)
                z = float(meta.get("spacing", x))
                voxel_size = (z * factor, x * factor, x * factor)
    except Exception as exc:  # tifffile raises many types for broken files
        raise InputError(f"cannot read {path}: {exc}") from exc
    return Tomogram(data, voxel_size, (0.0, 0.0, 0.0), {"source": str(path)})


def read_volume(path: str | os.PathLike, level: int | str | None = None) -> Tomogram:
    """Read an MRC-family or TIFF tomogram by its suffix, or one level of an OME-Zarr store
    (``level``, OME-Zarr only: a number or a voxel size such as ``"8A"``; default 0)."""
    path = Path(path)
    if path.suffix.lower() in ZARR_SUFFIXES:
        from .zarr_io import read_zarr  # imports zarr: only when a store is opened

        if not path.is_dir():
            raise InputError(f"cannot read {path}: no such OME-Zarr folder")
        return read_zarr(path, 0 if level is None else level)
    if level is not None:
        raise InputError(f"--level applies to OME-Zarr (.zarr) inputs only, not {path.name}")
    if path.is_dir():
        raise InputError(f"cannot read {path}: a folder, not a tomogram file")
    if not path.is_file():
        raise InputError(f"cannot read {path}: no such file")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied")
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        return read_mrc(path)
    if suffix in TIFF_SUFFIXES:
        return read_tiff(path)
    raise InputError(
        f"cannot read {path}: unknown suffix {suffix!r} (use one of {', '.join(TOMOGRAM_SUFFIXES)})"
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output_path(
    path: str | os.PathLike,
    protect: tuple[str | os.PathLike, ...] = (),
    suffixes: tuple[str, ...] = MRC_SUFFIXES,
) -> Path:
    """Refuse outputs that would replace an input or cannot be created; return the Path."""
    path = Path(path)
    for src in protect:
        if _same_file(path, Path(src)):
            raise InputError(f"output {path} is the input file; choose another output path")
    if path.suffix.lower() not in suffixes:
        raise InputError(f"output {path} must end in one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist")
    return path


def usual_mode(bits: int) -> int:
    """``bits`` less the process umask: the mode a plain create gives (``mkstemp`` and
    ``mkdtemp`` make private entries, 0600 and 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return bits & ~umask


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, usual_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _set_mrc_metadata(
    mrc: mrcfile.mrcfile.MrcFile,
    voxel_size: tuple[float, float, float],
    origin: tuple[float, float, float],
    labels: tuple[str, ...] = (),
) -> None:
    mrc.voxel_size = (voxel_size[2], voxel_size[1], voxel_size[0])
    mrc.header.origin = (origin[2], origin[1], origin[0])
    for label in labels:
        mrc.add_label(label[:80])
    _update_header_stats(mrc)


def _update_header_stats(mrc: mrcfile.mrcfile.MrcFile) -> None:
    """Header min / max / mean / rms, computed slab by slab.

    mrcfile's ``update_header_stats`` makes full-size temporaries (``std``), which for a
    multi-GB memory-mapped output would cost that much RAM at the very end of a run.
    """
    data = mrc.data
    step = max(1, _STATS_VOXELS // max(1, data[0].size))
    lo, hi, total, squares, shift = np.inf, -np.inf, 0.0, 0.0, None
    for z in range(0, len(data), step):
        slab = np.array(data[z : z + step], dtype=np.float64).ravel()
        lo, hi = min(lo, slab.min()), max(hi, slab.max())
        shift = slab.mean() if shift is None else shift  # keeps the variance sum exact
        slab -= shift
        total += slab.sum()
        squares += float(np.dot(slab, slab))
        release_mapped_pages(data)
    mean = total / data.size
    mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, shift + mean
    mrc.header.rms = np.sqrt(max(squares / data.size - mean * mean, 0.0))


def write_mrc(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    *,
    protect: tuple[str | os.PathLike, ...] = (),
    labels: tuple[str, ...] = (),
) -> Path:
    """Write ``data`` as float32 MRC atomically, keeping voxel size (Å) and origin."""
    path = check_output_path(path, protect)
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"can only write 3D volumes, got shape {data.shape}")
    try:
        with atomic_path(path) as tmp:
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(data.astype(np.float32, copy=False))
                _set_mrc_metadata(mrc, voxel_size, origin, labels)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def reserve_disk_space(path: str | os.PathLike) -> None:
    """Allocate the file's whole size now (where the OS can), so that a full disk fails
    here with an ``OSError`` instead of a crash while writing through a memory map."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.path.getsize(path))


@contextlib.contextmanager
def mrc_output(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    *,
    protect: tuple[str | os.PathLike, ...] = (),
    labels: tuple[str, ...] = (),
) -> Iterator[np.ndarray]:
    """Yield a writable memory-mapped float32 array that becomes ``path`` on success.

    Disk space is reserved up front, so a full disk fails here with a clear error instead
    of a crash while writing through the memory map.
    """
    path = check_output_path(path, protect)
    try:
        with atomic_path(path) as tmp:
            mrc = mrcfile.new_mmap(tmp, shape=shape, mrc_mode=2, overwrite=True)
            try:
                reserve_disk_space(tmp)
                yield mrc.data
                _set_mrc_metadata(mrc, voxel_size, origin, labels)
                mrc.flush()
            finally:
                mrc.close()
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
