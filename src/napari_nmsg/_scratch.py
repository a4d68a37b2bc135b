"""Disk-backed output layers: a denoised tomogram lives in a memory-mapped MRC file in a
scratch folder, not in RAM, so the widget handles tomograms larger than memory.

The engine writes tiles straight into the memory map and gives the written pages back
(``mapped_pages``); napari reads the slices it shows from the page cache. A file lives as
long as the layer that shows it: it is deleted when the layer is removed, when a new run
replaces its data, and when the widget or Python closes. No Qt here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from .errors import OutputError
from .io import reserve_disk_space

SCRATCH_ENV = "NAPARI_NMSG_SCRATCH"  # overrides the default folder, e.g. a fast local disk


def default_folder() -> Path:
    """``$NAPARI_NMSG_SCRATCH``, else the user's cache folder: on disk, where the system
    temporary folder is often a RAM disk (tmpfs)."""
    if os.environ.get(SCRATCH_ENV):
        return Path(os.environ[SCRATCH_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-nmsg")) / "outputs"


class ScratchFiles:
    """The memory-mapped MRC files behind output layers, created and deleted here.

    Deleting a file leaves the mapping valid for as long as anything still holds the array
    (POSIX keeps an unlinked file's pages until the last mapping goes): a layer removed
    from the viewer but still referenced, e.g. by an undo, never reads freed memory.
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder else default_folder()
        self._files: dict[int, tuple[np.memmap, Path]] = {}  # id(data) -> (data, path)
        self._undeleted: list[Path] = []
        atexit.register(self.release_all)

    def new(self, shape: tuple[int, ...], name: str) -> np.memmap:
        """A zero-filled float32 memory map of ``shape``, its disk space reserved now, so
        a full disk fails here in one line rather than while tiles are written."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "output"
        path = self.folder / f"{stem}-{uuid.uuid4().hex[:8]}.mrc"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with mrcfile.new_mmap(path, shape=shape, mrc_mode=2) as mrc:
                offset = mrc.header.nbytes + mrc.extended_header.nbytes
            reserve_disk_space(path)
            data = np.memmap(path, dtype=np.float32, mode="r+", offset=offset, shape=shape)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise OutputError(
                exc.errno,
                f"cannot make the output's scratch file in {self.folder}: "
                f"{exc.strerror or exc} (choose another scratch folder)",
            ) from exc
        self._files[id(data)] = (data, path)
        return data

    def path_of(self, data: Any) -> Path | None:
        """The scratch file behind ``data``, or None if it is not one of ours."""
        held, path = self._files.get(id(data), (None, None))
        return path if held is data else None

    def release(self, data: Any) -> bool:
        """Delete the scratch file behind ``data``; False if it is not ours."""
        path = self.path_of(data)
        if path is None:
            return False
        del self._files[id(data)]
        self._delete(path)
        return True

    def release_all(self) -> None:
        for data, _ in list(self._files.values()):
            self.release(data)
        for path in self._undeleted[:]:
            self._undeleted.remove(path)
            self._delete(path)

    def _delete(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError:  # Windows: a file still mapped cannot go; tried again at exit
            self._undeleted.append(path)
