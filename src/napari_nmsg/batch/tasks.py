"""The Dask tasks, run on the workers: one tomogram (``run_job``) or the fit-on model
(``run_fit_job``), each reporting where it ran and the memory it used.

The engine (and torch) is imported inside the functions: the workers need it, importing
the batch package on the driver does not.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..io import read_volume
from ..provenance import voxel_size_note
from ..zarr_io import is_zarr
from .heap import tensor_friendly_heap
from .resume import (
    file_digest,
    file_fingerprint,
    read_sidecar,
    sidecar_matches,
    sidecar_path,
    write_json_atomic,
)

if TYPE_CHECKING:
    from ..engine import NMSGConfig

EVENT_TOPIC = "napari-nmsg-batch"


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for one tomogram (small and picklable)."""

    index: int
    input: str
    output: str
    config: dict[str, Any]
    settings: dict[str, Any]
    digest: str
    model: str | None = None
    torch_threads: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    io: dict[str, Any] = field(default_factory=dict)  # denoise_file's level, levels, voxel_size
    background: str | None = None  # mask file: learn the noise only where it is non-zero


def zarr_level(path: str, level: int | str | None) -> int | str | None:
    """The batch's ``--level`` is for its OME-Zarr inputs; a list may mix them with MRC."""
    return level if is_zarr(path) else None


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _setup_task(config: NMSGConfig, torch_threads: int | None) -> tuple[NMSGConfig, dict]:
    """Torch threads and GPU for this worker; returns the config to use and facts to report."""
    import torch

    from ..engine import resolve_device

    worker = _worker()
    slots = worker.state.nthreads if worker is not None else 1
    threads = torch_threads or max(1, usable_cores() // max(1, slots))
    # Dask workers start with OMP_NUM_THREADS=1, so torch must be told explicitly.
    torch.set_num_threads(threads)
    device = config.device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        name = getattr(worker, "name", None)
        if count > 1 and isinstance(name, int):  # LocalCluster: one worker per GPU
            device = f"cuda:{name % count}"
    resolved = resolve_device(device)
    if resolved.type == "cuda":  # the task's own GPU: a worker of several runs on cuda:N
        torch.cuda.reset_peak_memory_stats(resolved)
    facts = {"worker": getattr(worker, "address", "local"), "torch_threads": threads}
    return config.replace(device=device), facts | {"device": str(resolved)}


def _memory_facts(device: str | None) -> dict[str, float]:
    """Peak RSS of this worker process so far, its anonymous / file-backed RSS now, and the
    peak memory of this task's GPU (MB) when ``device`` is one."""
    import torch

    facts: dict[str, float] = {}
    with contextlib.suppress(ImportError):  # resource is Unix-only: no peak RSS on Windows
        import resource

        facts["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device is not None and device.startswith("cuda") and torch.cuda.is_initialized():
        facts["gpu_peak_mb"] = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                facts[key.lower().replace("rss", "rss_") + "_mb"] = int(value.split()[0]) / 1024
    return facts


def _announce(index: int, event: str) -> None:
    """Tell the driver's progress bar that a task started or ended (best effort)."""
    worker = _worker()
    if worker is not None:
        with contextlib.suppress(Exception):
            worker.log_event(EVENT_TOPIC, {"event": event, "index": index})


@tensor_friendly_heap()
def run_job(job: Job) -> dict[str, Any]:
    """Denoise one tomogram (a Dask task). Never raises: errors are returned as results."""
    from .._api import denoise_file
    from ..engine import NMSGConfig, load_model

    started = time.perf_counter()
    _announce(job.index, "start")
    record: dict[str, Any] = {"index": job.index, "status": "failed", "error": None}
    seconds: dict[str, float] = {}
    output, sidecar = Path(job.output), sidecar_path(Path(job.output))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config, facts = _setup_task(NMSGConfig.from_dict(job.config), job.torch_threads)
            record.update(facts)
            files = {"input": job.input, "background": job.background}
            made_from = {
                name: {"path": path, **file_fingerprint(path), "blake2b": file_digest(path)}
                for name, path in files.items()
                if path is not None
            }
            seconds["hash"] = time.perf_counter() - started
            old = read_sidecar(sidecar)
            contents: dict[str, dict[str, Any] | None] = dict.fromkeys(files)
            contents |= {name: {"blake2b": now["blake2b"]} for name, now in made_from.items()}
            if sidecar_matches(old, output, job.digest, contents):
                # Same bytes, new mtime (touched or copied): refresh the quick-check fields.
                for name, now in made_from.items():
                    old[name].update(now)
                write_json_atomic(sidecar, old)
                record["status"] = "skipped"
            else:
                options = job.io | {"level": zarr_level(job.input, job.io.get("level"))}
                if options.get("voxel_size") is None:  # a given one the driver says once
                    tomo = read_volume(job.input, level=options["level"])  # lazy: the header
                    note = voxel_size_note(tomo.voxel_size, None)
                    if note:
                        warnings.warn(note, stacklevel=1)
                model = load_model(job.model) if job.model else None
                mask = {"background": made_from["background"]} if job.background else {}
                spent, _ = denoise_file(
                    job.input, output, config, model, overrides=job.overrides, **options,
                    input_record={k: v for k, v in made_from["input"].items() if k != "path"},
                    sidecar_fields={"settings": job.settings, "settings_digest": job.digest,
                                    **mask},
                    background=job.background,
                )  # fmt: skip
                seconds.update(spent)
                record["status"] = "done"
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc(limit=8)
    record["warnings"] = sorted({str(w.message) for w in caught})
    record["seconds"] = seconds | {"total": time.perf_counter() - started}
    _announce(job.index, "end")
    return record | _memory_facts(record.get("device"))


@tensor_friendly_heap()
def run_fit_job(
    inputs: list[str],
    model_path: str,
    config: dict[str, Any],
    torch_threads: int | None,
    level: int | str | None = None,
    backgrounds: list[str] | None = None,
) -> dict[str, Any]:
    """Fit one model on several tomograms and save it (a Dask task; raises on failure).
    With ``backgrounds`` (one mask file per input), each tomogram's noise is learned in its
    mask; a tomogram whose mask is unusable is left out of the fit, as an unusable volume."""
    from .._api import read_background
    from ..engine import NMSGConfig, iter_fit_denoiser_many, run_events, save_model
    from ..engine.volume import validate_background, validate_volume

    started = time.perf_counter()
    cfg, facts = _setup_task(NMSGConfig.from_dict(config), torch_threads)
    volumes, masks, used, unusable = [], [], [], {}
    for path, mask_path in zip(inputs, backgrounds or [None] * len(inputs), strict=True):
        try:
            tomo = read_volume(path, level=zarr_level(path, level))
            validate_volume(tomo.data)
            mask = read_background(mask_path, tomo)
            if mask is not None:
                validate_background(mask, tomo.data.shape)
        except InputError as exc:
            unusable[path] = str(exc)
            continue
        volumes.append(tomo.data)
        masks.append(mask)
        used.append({"path": path, **file_fingerprint(path)})
        if mask_path is not None:
            used[-1]["background"] = mask_path
    if not volumes:
        raise InputError(f"none of the {len(inputs)} tomograms chosen for fitting is usable")
    model = run_events(iter_fit_denoiser_many(volumes, cfg, masks))
    save_model(model, model_path)
    return {
        **facts,
        "used": used,
        "unusable": unusable,
        "model_blake2b": file_digest(model_path),
        "seconds": {"fit": time.perf_counter() - started},
        **_memory_facts(facts["device"]),
    }
