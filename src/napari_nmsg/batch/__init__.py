"""Denoise many tomograms on a Dask cluster: resumable, with failure isolation.

``denoise_many`` (and ``nmsg batch``) fans one task per tomogram out over a Dask cluster (a
``LocalCluster`` sized to the machine, or an existing scheduler). Three modes:

* self-supervised (default): every task learns its own noise model and denoiser, from
  the background its own mask marks if ``background=`` names one per tomogram;
* ``model=``: inference only, with a saved model;
* ``fit_on=N``: one model is fitted on N of the tomograms (``engine.iter_fit_denoiser_many``;
  in their masks, with ``background=``), saved into the output folder, then applied to all.

Inputs may be MRC, TIFF or OME-Zarr (``.zarr`` folders); outputs are MRC, or OME-Zarr with
``output_format="zarr"``.

Resuming: each output is written atomically (``io.mrc_output``, ``zarr_io.zarr_output``)
and then gets a sidecar ``<output>.nmsg.json`` (also atomic) recording the input's size,
mtime and BLAKE2b content hash (and its mask's), the settings, the package version and
the output's provenance. A re-run skips an input when its sidecar matches: first by size +
mtime (no file is read, like ``rsync``'s quick check; for a ``.zarr`` folder over all its
files), and if only the mtime differs by re-hashing the input (and mask) on the worker (a
touched or copied file with the same bytes is not redone). Anything else (no sidecar, no
output, other settings, other content, a mask added, changed or dropped) is done again.
Temporary ``.<name>.XXXX.part`` files (folders for OME-Zarr) left by a killed run are
removed at the start of the next one, which holds a lock on the output folder so that two
runs never write into the same folder at once.

Failure isolation: a task that raises (unreadable file, bad volume, ...) is reported with
its error; the others finish. ``summary.json`` and ``summary.csv`` in the output folder list
every input with its status (done / skipped / failed / cancelled), timings, output, mask
and error.

Importing this package imports neither torch nor Dask: they load when a run starts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import InputError, OutputError
from ..zarr_io import parse_level
from .cluster import WORKER_MEMORY, LazyClient, local_cluster_size, run_tasks, shared_model
from .inputs import (
    SHARED_MODEL_NAME,
    check_background_template,
    expand_inputs,
    folder_lock,
    own_names,
    plan,
    remove_stale_temp_files,
)
from .resume import config_key, file_digest, settings_digest, sidecar_path, unfinished
from .summary import FAILED_EXIT_CODE, BatchSummary, ItemResult
from .tasks import Job, run_job
from .tasks import _memory_facts as _memory_facts  # for the test that imports without resource

if TYPE_CHECKING:
    from ..engine import NMSGConfig

_IO_DEFAULTS = {"level": None, "levels": 1, "voxel_size": None}

__all__ = [
    "FAILED_EXIT_CODE",
    "SHARED_MODEL_NAME",
    "WORKER_MEMORY",
    "BatchSummary",
    "ItemResult",
    "Job",
    "denoise_many",
    "expand_inputs",
    "local_cluster_size",
    "remove_stale_temp_files",
    "run_job",
    "sidecar_path",
]


def denoise_many(
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    config: NMSGConfig | None = None,
    model: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    fit_on: int | None = None,
    scheduler: str | os.PathLike | None = None,
    n_workers: int | None = None,
    torch_threads: int | None = None,
    memory_limit: str | float | None = None,
    quiet: bool = False,
    level: int | str | None = None,
    levels: int = 1,
    voxel_size: float | None = None,
    output_format: str = "mrc",
    background: str | None = None,
) -> BatchSummary:
    """Denoise every input tomogram into ``outdir`` on a Dask cluster; resumable.

    ``inputs``: paths, glob patterns or ``@list.txt`` files. ``config``: method settings
    (default: the fast preset). ``model``: a saved model file (inference only), applied
    with its own inference settings except the ``overrides`` the user set explicitly (e.g.
    command-line flags; ``engine.config.inference_settings``). ``fit_on``: fit one model
    on this many of the inputs, then denoise all with it. ``scheduler``: the address
    (``tcp://host:port``) or scheduler file of an existing Dask cluster; without it a
    ``LocalCluster`` of ``n_workers`` workers (default: one per GPU, or per core and 3 GiB) is
    started for the run. ``torch_threads``: torch threads per task (default: the worker's
    cores divided by its task slots). ``memory_limit``: per local worker (Dask syntax; 0
    disables Dask's memory policing). ``level``: which level of the OME-Zarr inputs to
    read (a number or a voxel size such as ``"8A"``; default 0). ``output_format``:
    ``"mrc"`` or ``"zarr"`` (OME-Zarr with ``levels`` pyramid levels). ``voxel_size``: Å
    written into every output instead of the input's. ``background``: where each
    tomogram's mask lies, a path template in which ``{stem}`` is the tomogram's name
    without its suffix, relative to the tomogram's folder unless absolute (e.g.
    ``"{stem}_ice.mrc"``); its noise is learned only where the mask is non-zero, and an
    output (with ``fit_on``: the shared model) is redone when its mask changes. Returns a
    ``BatchSummary``, also written as ``summary.json`` / ``summary.csv``; failures (a
    missing mask too) are reported there, not raised.
    """
    from ..engine import NMSGConfig, load_model
    from ..engine.config import INFERENCE_FIELDS, inference_settings

    started = time.perf_counter()
    if model is not None and fit_on is not None:
        raise InputError("use either a saved model or --fit-on, not both")
    if background is not None and model is not None:
        raise InputError(
            "--background marks where each tomogram's noise is learned, and with --model "
            "none is learned: leave one of them out"
        )
    if background is not None:
        check_background_template(background)
    if fit_on is not None and fit_on < 1:
        raise InputError(f"--fit-on needs a positive number of tomograms, not {fit_on}")
    if levels != 1 and output_format != "zarr":
        raise InputError(f"--levels {levels} needs --output-format zarr")
    if levels < 1:
        raise InputError(f"--levels {levels} must be at least 1")
    if voxel_size is not None and not voxel_size > 0:
        raise InputError(f"--voxel-size {voxel_size:g} must be positive")
    if level is not None:
        parse_level(level)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    config = config or NMSGConfig.preset("fast")
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input tomograms given")
    outdir = Path(outdir).absolute()
    items = plan(paths, outdir, output_format, background)  # refused: nothing is created
    if fit_on is not None:  # the masks are the shared fit's; its model denoises all as they are
        for item in items:
            item.background = None
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot create {outdir}: {exc.strerror}") from exc
    mode = "model" if model else "fit-on" if fit_on else "self"
    summary = BatchSummary(outdir, mode, items)
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr))

    with folder_lock(outdir), contextlib.ExitStack() as stack:
        try:
            summary.stale_files_removed = remove_stale_temp_files(outdir, own_names(items))
            client = LazyClient(stack, summary, scheduler, n_workers, torch_threads,
                                memory_limit, config.device, say)  # fmt: skip
            applied = config  # whose inference settings the outputs get (fit-on: fitted with it)
            if mode == "model":
                model_path = str(Path(model).absolute())
                # a bad model file is one clear error, before any work
                applied = load_model(model_path).config
                settings = {"mode": "model", "model_blake2b": file_digest(model_path)}
            elif mode == "fit-on":
                model_path = str(outdir / SHARED_MODEL_NAME)
                fitted = shared_model(
                    paths, fit_on, model_path, config, client, say, level, background
                )
                summary.shared_model = fitted
                if fitted.get("error"):
                    for item in items:
                        item.status, item.error = "failed", f"shared model: {fitted['error']}"
                settings = {"mode": "fit-on", "model_blake2b": fitted.get("model_blake2b")}
            else:
                model_path = None
                settings = {"mode": "self", "config": config_key(config)}
            inference = inference_settings(applied, overrides)
            settings["inference"] = {k: getattr(inference, k) for k in INFERENCE_FIELDS}
            io = {"level": level, "levels": levels, "voxel_size": voxel_size}
            changed = {k: v for k, v in io.items() if v != _IO_DEFAULTS[k]}
            if changed:  # only then: the outputs of earlier runs stay valid
                settings["io"] = changed
            summary.settings = settings | {"package_version": __version__}
            digest = settings_digest(summary.settings)
            todo = unfinished(items, digest)
            if todo:
                run_tasks(
                    items, todo, client, config, summary.settings, digest, model_path,
                    dict(overrides or {}), quiet, io,
                )  # fmt: skip
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc}"
            for item in items:
                if item.status == "pending":
                    item.status, item.error = "cancelled", f"the batch run was {reason}"
            summary.wall_seconds = time.perf_counter() - started
            with contextlib.suppress(Exception):
                summary.write()
            raise
        summary.wall_seconds = time.perf_counter() - started
        summary.write()
    return summary
