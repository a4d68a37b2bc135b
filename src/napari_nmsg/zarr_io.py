"""OME-Zarr tomograms (OME-NGFF multiscale images): read one level lazily, write a pyramid.

Reading takes a 3D single-channel image with axes z, y, x, in NGFF 0.4 (zarr v2, as the CZ
cryoET data portal serves it) or 0.5 (zarr v3, metadata under ``"ome"``), at the level
asked for by number or by voxel size. The level's zarr array itself is returned: slicing it
reads only the chunks it touches, so the engine streams it as it streams a memory map.

Writing makes NGFF 0.4 on zarr v2, which every OME-Zarr reader opens (0.5 needs zarr v3
readers): full resolution first, each further level the 2×2×2 block mean of the one above,
computed slab by slab after inference. The store is built under a temporary name beside the
target and renamed into place only when complete. zarr is imported only here, and only when
a store is read or written: importing the package (napari does, to open files) stays light.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputError
from .io import ZARR_SUFFIXES, Tomogram, check_output_path, usual_mode

NGFF_VERSION = "0.4"
# Å per NGFF length unit, for the units a tomogram can come in
ANGSTROMS_PER_UNIT = {
    "angstrom": 1.0,
    "picometer": 0.01,
    "nanometer": 10.0,
    "micrometer": 1e4,
    "millimeter": 1e7,
    "centimeter": 1e8,
    "meter": 1e10,
}
# 4 planes of 256² float32 = 1 MiB a chunk: a slice viewer reads 4 planes for the one it
# shows, and a 1024² × 300 tomogram is 1200 files a level, not 4800 as with 1-plane chunks
CHUNKS = (4, 256, 256)
_SLAB_VOXELS = 1 << 24  # input voxels per step when computing a pyramid level
_VOXEL_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:a|å|angstrom)\s*$", re.IGNORECASE)


def is_zarr(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in ZARR_SUFFIXES


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as exc:
        raise InputError("OME-Zarr needs zarr 3 (Python 3.11 or newer): pip install zarr") from exc
    return zarr


def parse_level(level: int | str) -> int | float:
    """A level number (``2``, ``"2"``: an int) or a voxel size in Å (``"8A"``, ``"8.0Å"``:
    a float, meaning the level whose voxel size is nearest)."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    text = str(level).strip()
    if text.isdigit():
        return int(text)
    match = _VOXEL_SIZE.match(text)
    if match and float(match.group(1)) > 0:
        return float(match.group(1))
    raise InputError(
        f"level {level!r} is neither a level number (0, 1, ...) nor a voxel size such as 8A"
    )


def _multiscale(attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    images = attrs.get("ome", attrs).get("multiscales")
    if not images or not isinstance(images, list) or not isinstance(images[0], dict):
        raise InputError(
            f"cannot read {path}: no OME-NGFF multiscales metadata (not an OME-Zarr image)"
        )
    return images[0]


def _angstroms_per_unit(axes: list[Any], path: Path) -> float | None:
    """Å per unit of the z, y, x axes; None when they carry no unit (voxel size unknown)."""
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    if names != ["z", "y", "x"]:
        raise InputError(
            f"cannot read {path}: its axes are {', '.join(map(str, names))}; nmsg needs one 3D "
            "channel with axes z, y, x"
        )
    units = {a.get("unit") if isinstance(a, dict) else None for a in axes}
    if units == {None}:
        return None
    if len(units) > 1:
        raise InputError(
            f"cannot read {path}: its axes have different units {sorted(units, key=str)}"
        )
    (unit,) = units
    if unit not in ANGSTROMS_PER_UNIT:
        raise InputError(
            f"cannot read {path}: axis unit {unit!r} is not a length unit nmsg reads (one of "
            f"{', '.join(ANGSTROMS_PER_UNIT)})"
        )
    return ANGSTROMS_PER_UNIT[unit]


def _scale_and_translation(transforms: Sequence[Any], path: Path) -> tuple[np.ndarray, ...]:
    """The voxel spacing and the position of voxel 0 after ``transforms``, applied in order."""
    scale, shift = np.ones(3), np.zeros(3)
    for transform in transforms:
        kind = transform.get("type") if isinstance(transform, dict) else None
        values = transform.get(kind) if kind in ("scale", "translation") else None
        if kind == "identity":
            continue
        if values is None or len(values) != 3:
            raise InputError(
                f"cannot read {path}: coordinate transformation {kind!r} is not a 3D scale or "
                "translation"
            )
        if kind == "scale":
            scale, shift = scale * values, shift * values
        else:
            shift = shift + values
    if not (scale > 0).all():
        raise InputError(f"cannot read {path}: non-positive voxel spacing {scale.tolist()}")
    return scale, shift


def _choose(
    request: int | float, sizes: list[tuple[float, ...]] | None, count: int, path: Path
) -> int:
    """The level index: as given, or the level whose mean voxel size (Å) is nearest."""
    if isinstance(request, float):
        if sizes is None:
            raise InputError(
                f"cannot choose a level of {path} by voxel size: its axes have no unit"
            )
        return int(np.argmin([abs(np.mean(s) - request) for s in sizes]))
    if not 0 <= request < count:
        shown = f": {', '.join(f'{np.mean(s):.4g}' for s in sizes)} Å" if sizes else ""
        raise InputError(
            f"cannot read {path}: level {request} does not exist (levels 0-{count - 1}{shown})"
        )
    return request


def read_zarr(path: str | os.PathLike, level: int | str = 0) -> Tomogram:
    """One level of an OME-Zarr image, lazily, with its voxel size and origin in Å.

    ``level``: a number, or a voxel size such as ``"8A"`` (the level nearest 8 Å). Axes
    without a unit give voxel size 0 (unknown), as an MRC header of 0 does.
    """
    path = Path(path)
    zarr = _zarr()
    request = parse_level(level)
    try:
        group = zarr.open_group(path, mode="r")
        attrs = group.attrs.asdict()
    except (OSError, ValueError) as exc:  # zarr's not-found errors are both
        raise InputError(f"cannot read {path}: not a zarr group ({exc})") from exc
    image = _multiscale(attrs, path)
    factor = _angstroms_per_unit(image.get("axes") or [], path)
    datasets = [d for d in image.get("datasets") or [] if isinstance(d, dict)]
    outer = image.get("coordinateTransformations") or []
    placed = [
        _scale_and_translation([*d.get("coordinateTransformations", []), *outer], path)
        for d in datasets
    ]
    sizes = [tuple(scale * factor) for scale, _ in placed] if factor else None
    index = _choose(request, sizes, len(datasets), path)
    try:
        array = group[datasets[index]["path"]]
    except (KeyError, TypeError) as exc:
        raise InputError(f"cannot read {path}: level {index} has no array ({exc})") from exc
    if getattr(array, "ndim", None) != 3:
        raise InputError(
            f"cannot read {path}: level {index} has shape {getattr(array, 'shape', '?')}; nmsg "
            "needs one 3D channel with axes z, y, x"
        )
    scale, shift = placed[index]
    voxel_size = tuple(float(v) for v in scale * factor) if factor else (0.0, 0.0, 0.0)
    origin = tuple(float(v) for v in shift * factor) if factor else (0.0, 0.0, 0.0)
    metadata = {
        "source": str(path),
        "ome_zarr": {"level": index, "levels": len(datasets), "path": datasets[index]["path"]},
    }
    return Tomogram(array, voxel_size, origin, metadata)


def pyramid_shapes(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """The shape of each level, each 2× smaller per axis; refuses levels with no voxels."""
    if levels < 1:
        raise InputError(f"--levels {levels} must be at least 1")
    shapes = [tuple(int(n) >> k for n in shape) for k in range(levels)]
    if min(shapes[-1]) < 1:
        raise InputError(
            f"--levels {levels} is too many for a volume of shape {tuple(shape)}: level "
            f"{levels - 1} would have no voxels"
        )
    return shapes


def ngff_metadata(
    name: str,
    levels: int,
    voxel_size: tuple[float, float, float],
    origin: tuple[float, float, float],
) -> dict[str, Any]:
    """The NGFF 0.4 ``multiscales`` attribute of a pyramid of 2× block means.

    A block mean's voxel centre lies half a voxel of its own level past the first voxel's,
    hence each level's translation. An unknown voxel size (0) is written as spacing 1
    without a unit, which reads back as unknown.
    """
    known = all(v > 0 for v in voxel_size)
    spacing = np.array(voxel_size if known else (1.0,) * 3, dtype=float)
    start = np.array(origin if known else (0.0,) * 3, dtype=float)
    unit = {"unit": "angstrom"} if known else {}
    datasets = []
    for k in range(levels):
        factor = 2**k
        transforms = [
            {"type": "scale", "scale": (spacing * factor).tolist()},
            {"type": "translation", "translation": (start + spacing * (factor - 1) / 2).tolist()},
        ]
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    image = {
        "version": NGFF_VERSION,
        "name": name,
        "axes": [{"name": axis, "type": "space", **unit} for axis in "zyx"],
        "datasets": datasets,
        "type": "local_mean",
        "metadata": {"description": "each level is the 2x2x2 block mean of the one above"},
    }
    return {"multiscales": [image]}


def _is_store(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in (".zgroup", ".zattrs", "zarr.json"))


def check_zarr_output(path: str | os.PathLike, protect: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse a store that would replace, or lie inside or around, an input, or replace a
    file or folder that is not a zarr store; return the Path."""
    path = check_output_path(path, tuple(protect), suffixes=ZARR_SUFFIXES)
    target = path.resolve()
    for source in protect:
        src = Path(source).resolve()
        if target == src or src in target.parents or target in src.parents:
            raise InputError(f"output {path} would be written over or inside the input {source}")
    if path.exists() and not _is_store(path):
        raise InputError(f"output {path} exists and is not a zarr store; choose another path")
    return path


def _downsample(finer: Any, coarser: Any) -> None:
    """``coarser`` = the 2×2×2 block means of ``finer``, a chunk-aligned slab at a time."""
    nz, ny, nx = coarser.shape
    depth = coarser.chunks[0]
    depth *= max(1, _SLAB_VOXELS // (8 * depth * ny * nx))
    for z in range(0, nz, depth):
        stop = min(z + depth, nz)
        block = np.asarray(finer[2 * z : 2 * stop, : 2 * ny, : 2 * nx], dtype=np.float32)
        blocks = block.reshape(stop - z, 2, ny, 2, nx, 2)
        coarser[z:stop] = blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _temporary_folder(path: Path) -> Path:
    """An empty folder beside ``path``, named as ``io.atomic_path`` names its temporary files
    (so that the batch removes it as a leftover), with the usual umask-based mode."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    os.chmod(tmp, usual_mode(0o777))
    return tmp


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished store to ``path``. An existing store there is first moved aside
    (a folder cannot be renamed over a non-empty one), then removed."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = _temporary_folder(path)
    os.rmdir(old)
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def zarr_output(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    voxel_size: tuple[float, float, float],
    origin: tuple[float, float, float],
    *,
    protect: Sequence[str | os.PathLike] = (),
    levels: int = 1,
    attrs: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield the full-resolution float32 zarr array of a new OME-Zarr store at ``path``
    (voxel size and origin in Å, z y x; a voxel size of 0 is unknown).

    Write into it slab by slab (``out[z0:z1] = ...``). On success the further ``levels``
    are computed from it, the NGFF metadata and ``attrs`` written, and the store renamed
    into place; on any failure nothing is left at ``path`` or beside it.
    """
    path = check_zarr_output(path, protect)
    shapes = pyramid_shapes(shape, levels)
    zarr = _zarr()
    tmp = None
    try:
        tmp = _temporary_folder(path)
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        arrays = [
            root.create_array(
                str(k), shape=s, chunks=tuple(min(c, n) for c, n in zip(CHUNKS, s, strict=True)),
                dtype="float32", fill_value=0.0,
                chunk_key_encoding={"name": "v2", "separator": "/"},  # as NGFF 0.4 requires
            )
            for k, s in enumerate(shapes)
        ]  # fmt: skip
        yield arrays[0]
        for finer, coarser in itertools.pairwise(arrays):
            _downsample(finer, coarser)
        root.attrs.update(ngff_metadata(path.stem, levels, voxel_size, origin) | (attrs or {}))
        _move_into_place(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
