"""What lets a re-run skip finished work: fingerprints, digests and the output sidecars.

A sidecar ``<output>.nmsg.json`` records the input's size, mtime and BLAKE2b content hash
(and its background mask's, if it had one) and the digest of the settings; an input is
skipped when its sidecar still matches.

An OME-Zarr input or output is a folder of chunk files. Its fingerprint is over every file
and folder in it: the total size, the newest mtime and their number (the folder's own size
and mtime see no chunk rewritten in place); its digest reads every file in path order.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import OutputError
from ..io import atomic_path

if TYPE_CHECKING:
    from ..engine import NMSGConfig
    from .summary import ItemResult

SIDECAR_SUFFIX = ".nmsg.json"
SIDECAR_FORMAT = "napari-nmsg-batch-output"
_HASH_CHUNK = 1 << 20


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def _raise(error: OSError) -> None:
    raise error


def _tree(folder: Path) -> list[Path]:
    """Every file and folder under ``folder``, in a fixed (sorted) order."""
    found = []
    for root, dirs, files in os.walk(folder, onerror=_raise):
        dirs.sort()
        found += [Path(root, name) for name in (*dirs, *sorted(files))]
    return found


def file_fingerprint(path: str | os.PathLike) -> dict[str, int]:
    """Size and modification time (ns): the cheap check, no byte of the file is read.

    For a folder (an OME-Zarr store): the total size of its files, the newest mtime of
    anything in it, and the number of files and folders.
    """
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    size, newest, entries = 0, st.st_mtime_ns, 0
    for entry in _tree(Path(path)):
        est = entry.stat()
        size += est.st_size if stat.S_ISREG(est.st_mode) else 0
        newest, entries = max(newest, est.st_mtime_ns), entries + 1
    return {"size": size, "mtime_ns": newest, "entries": entries}


def stored_size(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all the files of a folder store."""
    return file_fingerprint(path)["size"]


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b of the whole file, streamed in 1 MiB chunks (bounded memory); of a folder,
    of each file's relative path and bytes in turn."""
    h = hashlib.blake2b(digest_size=20)
    path = Path(path)
    files = [p for p in _tree(path) if p.is_file()] if path.is_dir() else [path]
    for file in files:
        if file != path:  # name and length first: a chunk renamed is another array
            name = file.relative_to(path).as_posix().encode()
            h.update(name + b"\0" + file.stat().st_size.to_bytes(8, "little"))
        with open(file, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def config_key(config: NMSGConfig) -> dict[str, Any]:
    """The config without the fields that cannot change an output's voxels (the machine's,
    the widget's previews): changing those does not redo work."""
    # imported here: the engine imports torch, which importing the batch package does not need
    from ..engine.config import SETTINGS

    ignored = {d.name for d in SETTINGS if d.setting.group in ("machine", "preview")}
    return {k: v for k, v in config.to_dict().items() if k not in ignored}


def sidecar_payload(**fields: Any) -> dict[str, Any]:
    """A sidecar: the header every sidecar shares, then ``fields`` in the order given."""
    return {
        "format": SIDECAR_FORMAT,
        "format_version": 1,
        "package_version": __version__,
        **fields,
    }


def write_text_atomic(path: Path, text: str) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's content, or None if it is missing, unreadable or not ours."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("format") != SIDECAR_FORMAT:
        return None
    return payload


def sidecar_matches(
    sidecar: dict[str, Any] | None,
    output: Path,
    digest: str,
    records: dict[str, dict[str, Any] | None],
) -> bool:
    """Is ``output`` finished for these settings and the files it is made from?

    ``records`` holds, for each such file (``"input"``, ``"background"``: its mask), the
    fields its sidecar record must match: the fingerprint (size + mtime, the quick check)
    or the ``blake2b`` content hash (after the quick check failed); None for a file the
    output must have been made without (no mask). The output must exist with the recorded
    size.
    """
    if not sidecar or sidecar.get("settings_digest") != digest:
        return False
    try:
        if stored_size(output) != sidecar["output"]["size"]:
            return False
    except (OSError, KeyError, TypeError):
        return False
    for name, expected in records.items():
        recorded = sidecar.get(name)
        if expected is None:
            if recorded is not None:
                return False
        elif not isinstance(recorded, dict) or any(
            recorded.get(k) != v for k, v in expected.items()
        ):
            return False
    return True


def unfinished(items: list[ItemResult], digest: str) -> list[int]:
    """Mark inputs whose output and sidecar pass the quick check as skipped, and those
    whose input or background mask cannot be read as failed; return the rest."""
    for item in items:
        if item.status != "pending":
            continue
        out = Path(item.output)
        records: dict[str, dict[str, Any] | None] = {"input": None, "background": None}
        try:
            for name in records:
                path = getattr(item, name)
                records[name] = None if path is None else file_fingerprint(path)
        except OSError as exc:
            what = "background mask " if name == "background" else ""
            item.status, item.error = "failed", f"cannot read {what}{path}: {exc.strerror}"
            continue
        if sidecar_matches(read_sidecar(sidecar_path(out)), out, digest, records):
            item.status = "skipped"
    return [i for i, item in enumerate(items) if item.status == "pending"]
