"""Which files a run reads and writes: the inputs, their outputs, the fit-on selection, and
the output folder's lock and leftovers."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from ..errors import InputError, OutputError
from ..io import MRC_SUFFIXES
from .resume import SIDECAR_SUFFIX
from .summary import SUMMARY_CSV, SUMMARY_JSON, ItemResult

SHARED_MODEL_NAME = "nmsg-shared-model.pt"
LOCK_NAME = ".nmsg-batch.lock"


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Paths from literal paths, glob patterns and ``@list.txt`` files, in order, no repeats.

    A list file holds one path or pattern per line (blank lines and ``#`` comments skipped);
    relative entries are relative to the current folder, as with ``tar -T``. A pattern that
    matches nothing is an error; a literal path that does not exist is kept (it is reported
    as failed, the other inputs still run).
    """
    found: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if text.startswith("@"):
            list_file = Path(text[1:])
            try:
                lines = list_file.read_text().splitlines()
            except OSError as exc:
                raise InputError(f"cannot read list file {list_file}: {exc.strerror}") from exc
            entries = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
            found.extend(expand_inputs(entries))
        elif glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise InputError(f"no file matches {text!r}")
            found.extend(Path(m) for m in matches)
        else:
            found.append(Path(os.path.expanduser(text)))
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.absolute(), path.absolute())
    return list(unique)


OUTPUT_FORMATS = ("mrc", "zarr")


def output_path(input_path: Path, outdir: Path, output_format: str = "mrc") -> Path:
    """The output for an input: same name in ``outdir``; as MRC, with the input's suffix
    if it is an MRC one and ``.mrc`` otherwise, or as an OME-Zarr ``.zarr`` store."""
    if output_format == "zarr":
        return outdir / (input_path.stem + ".zarr")
    suffix = input_path.suffix if input_path.suffix.lower() in MRC_SUFFIXES else ".mrc"
    return outdir / (input_path.stem + suffix)


def fit_on_selection(inputs: Sequence[Path], n: int) -> list[Path]:
    """``n`` inputs spread evenly over the list (all of them if ``n`` ≥ their number)."""
    if n >= len(inputs):
        return list(inputs)
    return [inputs[(i * len(inputs)) // n] for i in range(n)]


def check_background_template(template: str) -> None:
    """Refuse a ``--background`` template that does not name one mask per tomogram."""
    try:
        names = {template.format(stem=stem) for stem in ("a", "b")}
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"--background {template!r}: only {{stem}} (the tomogram's name) can be filled in"
        ) from exc
    if len(names) == 1:
        raise InputError(
            f"--background {template!r} names one file for every tomogram: one mask fits one "
            "tomogram, so write {stem} where its name goes, e.g. '{stem}_ice.mrc'"
        )


def background_path(input_path: Path, template: str) -> Path:
    """The background mask ``template`` names for ``input_path``: ``{stem}`` is the
    tomogram's name without its suffix, and a relative path is relative to its folder
    (masks usually lie beside their tomograms)."""
    mask = os.path.expanduser(template.format(stem=input_path.stem))
    return Path(os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(input_path)), mask)))


def plan(
    inputs: Sequence[Path],
    outdir: Path,
    output_format: str = "mrc",
    background: str | None = None,
) -> list[ItemResult]:
    """One pending item per input, with its mask if a ``background`` template (checked by
    ``check_background_template``) is given; refuses two inputs with one output, or an
    output that would replace its input or a mask, before any work."""
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"--output-format {output_format!r}: choose one of {OUTPUT_FORMATS}")
    items, seen = [], {}
    for path in inputs:
        out = output_path(path, outdir, output_format)
        if out in seen:
            raise InputError(
                f"{seen[out]} and {path} would both be written to {out}; rename one or run "
                "them into different output folders"
            )
        if out.absolute() == path.absolute():
            raise InputError(f"output {out} would replace its input; choose another folder")
        seen[out] = path
        item = ItemResult(str(path), str(out), "pending")
        if background is not None:
            mask = background_path(path, background)
            if mask == Path(os.path.abspath(path)):
                raise InputError(f"--background {background!r} names {path} itself as its mask")
            item.background = str(mask)
        items.append(item)
    masks = {Path(item.background): item.input for item in items if item.background}
    for out in map(os.path.abspath, seen):
        if Path(out) in masks:
            raise InputError(
                f"output {out} would replace the background mask of {masks[Path(out)]}; "
                "choose another folder"
            )
    return items


def own_names(items: Iterable[ItemResult]) -> list[str]:
    """The names this run writes into the output folder (whose leftovers it may remove)."""
    names = [Path(i.output).name for i in items]
    names += [n + SIDECAR_SUFFIX for n in names]
    names += [SHARED_MODEL_NAME, SHARED_MODEL_NAME + SIDECAR_SUFFIX, SUMMARY_JSON, SUMMARY_CSV]
    return names


@contextlib.contextmanager
def folder_lock(outdir: Path) -> Iterator[None]:
    """One batch run per output folder (released by the OS even if the run is killed)."""
    try:
        handle = open(outdir / LOCK_NAME, "a+")  # held (locked) for the whole run
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write into {outdir}: {exc.strerror}") from exc
    try:
        try:
            locked = _try_lock(handle)
        except OSError as exc:  # a file system without locks
            warnings.warn(f"cannot lock {outdir} ({exc}); going on without a lock", stacklevel=3)
            locked = True
        if not locked:
            raise InputError(
                f"another nmsg batch run is writing into {outdir}; wait for it to finish "
                "or choose another output folder"
            )
        yield
    finally:
        handle.close()


def _try_lock(handle: IO[str]) -> bool:
    """Lock ``handle``'s file without waiting: flock on POSIX, ``msvcrt`` on Windows.
    False when another process holds it."""
    try:
        import fcntl
    except ImportError:
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_stale_temp_files(outdir: Path, names: Iterable[str]) -> int:
    """Remove ``.<name>.XXXX.part`` files, or folders of unfinished OME-Zarr stores (left
    by a killed run), for our own output names."""
    ours = set(names)
    removed = 0
    for entry in os.scandir(outdir):
        if not (entry.name.startswith(".") and entry.name.endswith(".part")):
            continue
        name = entry.name[1 : -len(".part")].rsplit(".", 1)[0]
        if name in ours:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
    return removed
