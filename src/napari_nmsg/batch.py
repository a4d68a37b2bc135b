"""Denoise many tomograms on a Dask cluster: resumable, with failure isolation.

``denoise_many`` (and ``nmsg batch``) fans one task per tomogram out over a Dask cluster (a
``LocalCluster`` sized to the machine, or an existing scheduler). Three modes:

* self-supervised (default): every task learns its own noise model and denoiser;
* ``model=``: inference only, with a saved model;
* ``fit_on=N``: one model is fitted on N of the tomograms (``engine.multi_fit``), saved into
  the output folder, then applied to all of them.

Resuming: each output is written atomically (``io.mrc_output``) and then gets a sidecar
``<output>.nmsg.json`` (also atomic) recording the input's size, mtime and BLAKE2b content
hash, the settings and the package version. A re-run skips an input when its sidecar
matches: first by size + mtime (no file is read, like ``rsync``'s quick check), and if only
the mtime differs by re-hashing the input on the worker (a touched or copied file with the
same bytes is not redone). Anything else (no sidecar, no output, other settings, other
content) is done again. Temporary ``.<name>.XXXX.part`` files left by a killed run are
removed at the start of the next one, which holds a lock on the output folder so that two
runs never write into the same folder at once.

Failure isolation: a task that raises (unreadable file, bad volume, ...) is reported with
its error; the others finish. ``summary.json`` and ``summary.csv`` in the output folder list
every input with its status (done / skipped / failed / cancelled), timings, output and error.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io as _stringio
import json
import os
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._version import __version__
from .engine import (
    NMSGConfig,
    NMSGModel,
    iter_denoise,
    iter_fit_denoiser,
    load_model,
    resolve_device,
    run_events,
)
from .engine import save_model as _save_model
from .engine.config import INFERENCE_FIELDS, SETTINGS, inference_settings
from .engine.validation import QualityEstimate
from .errors import InputError, OutputError
from .io import (
    MODEL_SUFFIXES,
    MRC_SUFFIXES,
    atomic_path,
    check_output_path,
    mrc_output,
    read_volume,
)

SIDECAR_SUFFIX = ".nmsg.json"
SIDECAR_FORMAT = "napari-nmsg-batch-output"
SHARED_MODEL_NAME = "nmsg-shared-model.pt"
SUMMARY_JSON, SUMMARY_CSV = "summary.json", "summary.csv"
LOCK_NAME = ".nmsg-batch.lock"
EVENT_TOPIC = "napari-nmsg-batch"
FAILED_EXIT_CODE = 3
# Config fields that cannot change an output's voxels (the machine's, the widget's previews);
# changing them does not redo work.
_NOT_IN_KEY = tuple(d.name for d in SETTINGS if d.setting.group in ("machine", "preview"))
_HASH_CHUNK = 1 << 20


# --- inputs, outputs, fingerprints -----------------------------------------------------------


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


def output_path(input_path: Path, outdir: Path) -> Path:
    """The output for an input: same name in ``outdir`` (``.mrc`` for non-MRC inputs)."""
    suffix = input_path.suffix if input_path.suffix.lower() in MRC_SUFFIXES else ".mrc"
    return outdir / (input_path.stem + suffix)


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def file_fingerprint(path: str | os.PathLike) -> dict[str, int]:
    """Size and modification time (ns): the cheap check, no byte of the file is read."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b of the whole file, streamed in 1 MiB chunks (bounded memory)."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def _config_key(config: NMSGConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY}


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc


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
    *,
    fingerprint: dict[str, int] | None = None,
    content: str | None = None,
) -> bool:
    """Is ``output`` finished for these settings and this input?

    Give the input's ``fingerprint`` (size + mtime, the quick check) or its ``content``
    hash (after the quick check failed). The output must exist with the recorded size.
    """
    if not sidecar or sidecar.get("settings_digest") != digest:
        return False
    try:
        if output.stat().st_size != sidecar["output"]["size"]:
            return False
    except (OSError, KeyError, TypeError):
        return False
    recorded = sidecar.get("input", {})
    if fingerprint is not None:
        return all(recorded.get(k) == v for k, v in fingerprint.items())
    return content is not None and recorded.get("blake2b") == content


# --- one tomogram --------------------------------------------------------------------------


def denoise_file(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    config: NMSGConfig | None = None,
    model: NMSGModel | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    on_event: Callable[[Any], Any] | None = None,
    save_model: str | os.PathLike | None = None,
) -> tuple[dict[str, float], QualityEstimate | None]:
    """Denoise one tomogram file into one MRC file; fit a model to it unless ``model``.

    ``config`` gives the fitting settings (without a ``model``) and the device and tile
    batch to run on. The inference settings are the model's, except those the user set
    explicitly, given as ``overrides`` (``engine.config.inference_settings``). The output
    keeps the input's voxel size and origin and appears atomically (never partial).
    Returns the seconds spent reading, fitting and denoising, and the model's
    self-supervised quality estimate (also written into the MRC labels).
    """
    started = time.perf_counter()
    config = config or NMSGConfig.preset("fast")
    output = check_output_path(output, protect=(input_path,))
    if save_model:
        check_output_path(save_model, protect=(input_path,), suffixes=MODEL_SUFFIXES)
    tomo = read_volume(input_path)
    seconds = {"read": time.perf_counter() - started, "fit": 0.0}
    if model is None:
        model = run_events(iter_fit_denoiser(tomo.data, config), on_event)
        seconds["fit"] = time.perf_counter() - started - seconds["read"]
        if save_model:
            _save_model(model, save_model)
    before = time.perf_counter()
    run = {"device": config.device, "tile_batch": config.tile_batch}
    inference = inference_settings(model.config, {**(overrides or {}), **run})
    labels = (f"napari-nmsg {__version__}: denoised {Path(input_path).name}",)
    if model.quality is not None:
        labels += (quality_label(model.quality),)
    with mrc_output(
        output, tomo.data.shape, tomo.voxel_size, tomo.origin, protect=(input_path,), labels=labels
    ) as out:
        run_events(iter_denoise(tomo.data, model, out, inference), on_event)
    seconds["denoise"] = time.perf_counter() - before
    return seconds, model.quality


def quality_label(quality: QualityEstimate) -> str:
    """The estimate in one MRC label (80 characters at most)."""
    flags = "".join(
        f"; {name}"
        for name, on in (("fell back", quality.fell_back), ("over-smoothed", quality.over_smoothed))
        if on
    )
    return (
        f"nmsg estimate {quality.gain_over_gaussian_db:+.2f} dB vs Gaussian "
        f"sigma {quality.gaussian_sigma:g}{flags}"
    )[:80]


# --- tasks (run on the workers) ----------------------------------------------------------------


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


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _setup_task(config: NMSGConfig, torch_threads: int | None) -> tuple[NMSGConfig, dict]:
    """Torch threads and GPU for this worker; returns the config to use and facts to report."""
    import torch

    worker = _worker()
    slots = worker.state.nthreads if worker is not None else 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    threads = torch_threads or max(1, cpus // max(1, slots))
    # Dask workers start with OMP_NUM_THREADS=1, so torch must be told explicitly.
    torch.set_num_threads(threads)
    device = config.device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        name = getattr(worker, "name", None)
        if count > 1 and isinstance(name, int):  # LocalCluster: one worker per GPU
            device = f"cuda:{name % count}"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    facts = {"worker": getattr(worker, "address", "local"), "torch_threads": threads}
    return config.replace(device=device), facts | {"device": str(resolve_device(device))}


def _memory_facts() -> dict[str, float]:
    """Peak RSS of this worker process so far, its anonymous / file-backed RSS now, and the
    peak GPU memory of this task (MB)."""
    import torch

    facts: dict[str, float] = {}
    with contextlib.suppress(ImportError):  # resource is Unix-only: no peak RSS on Windows
        import resource

        facts["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        facts["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
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


def run_job(job: Job) -> dict[str, Any]:
    """Denoise one tomogram (a Dask task). Never raises: errors are returned as results."""
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
            fingerprint = file_fingerprint(job.input)
            content = file_digest(job.input)
            seconds["hash"] = time.perf_counter() - started
            old = read_sidecar(sidecar)
            if sidecar_matches(old, output, job.digest, content=content):
                # Same bytes, new mtime (touched or copied): refresh the quick-check fields.
                old["input"].update(fingerprint)
                write_json_atomic(sidecar, old)
                record["status"] = "skipped"
            else:
                model = load_model(job.model) if job.model else None
                spent, quality = denoise_file(
                    job.input, output, config, model, overrides=job.overrides
                )
                seconds.update(spent)
                write_json_atomic(
                    sidecar,
                    {
                        "format": SIDECAR_FORMAT,
                        "format_version": 1,
                        "package_version": __version__,
                        "input": {"path": job.input, **fingerprint, "blake2b": content},
                        "output": {"path": output.name, "size": output.stat().st_size},
                        "settings": job.settings,
                        "settings_digest": job.digest,
                        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "seconds": seconds,
                        "quality_estimate": quality.to_dict() if quality else None,
                    },
                )
                record["status"] = "done"
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc(limit=8)
    record["warnings"] = sorted({str(w.message) for w in caught})
    record["seconds"] = seconds | {"total": time.perf_counter() - started}
    _announce(job.index, "end")
    return record | _memory_facts()


def run_fit_job(
    inputs: list[str], model_path: str, config: dict[str, Any], torch_threads: int | None
) -> dict[str, Any]:
    """Fit one model on several tomograms and save it (a Dask task; raises on failure)."""
    from .engine.multi_fit import iter_fit_denoiser_many
    from .engine.volume import validate_volume

    started = time.perf_counter()
    cfg, facts = _setup_task(NMSGConfig.from_dict(config), torch_threads)
    volumes, used, unusable = [], [], {}
    for path in inputs:
        try:
            data = read_volume(path).data
            validate_volume(data)
        except InputError as exc:
            unusable[path] = str(exc)
            continue
        volumes.append(data)
        used.append({"path": path, **file_fingerprint(path)})
    if not volumes:
        raise InputError(f"none of the {len(inputs)} tomograms chosen for fitting is usable")
    model = run_events(iter_fit_denoiser_many(volumes, cfg))
    _save_model(model, model_path)
    return {
        **facts,
        "used": used,
        "unusable": unusable,
        "model_blake2b": file_digest(model_path),
        "seconds": {"fit": time.perf_counter() - started},
        **_memory_facts(),
    }


# --- results ---------------------------------------------------------------------------------


@dataclass
class ItemResult:
    """What happened to one input."""

    input: str
    output: str
    status: str  # done / skipped / failed / cancelled
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    worker: str | None = None
    device: str | None = None
    torch_threads: int | None = None
    peak_rss_mb: float | None = None
    rss_anon_mb: float | None = None
    rss_file_mb: float | None = None
    gpu_peak_mb: float | None = None
    warnings: list[str] = field(default_factory=list)
    traceback: str | None = None


_CSV_COLUMNS = [
    "input", "output", "status", "error", "seconds_total", "seconds_hash", "seconds_read",
    "seconds_fit", "seconds_denoise", "worker", "device", "torch_threads", "peak_rss_mb",
    "rss_anon_mb", "rss_file_mb", "gpu_peak_mb",
]  # fmt: skip


@dataclass
class BatchSummary:
    """The outcome of ``denoise_many``; also written as summary.json / summary.csv."""

    outdir: Path
    mode: str
    items: list[ItemResult]
    settings: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    n_workers: int | None = None
    scheduler: str | None = None
    dashboard: str | None = None
    shared_model: dict[str, Any] | None = None
    stale_files_removed: int = 0

    def with_status(self, status: str) -> list[ItemResult]:
        return [item for item in self.items if item.status == status]

    @property
    def done(self) -> list[ItemResult]:
        return self.with_status("done")

    @property
    def skipped(self) -> list[ItemResult]:
        return self.with_status("skipped")

    @property
    def failed(self) -> list[ItemResult]:
        return self.with_status("failed") + self.with_status("cancelled")

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        names = ("done", "skipped", "failed", "cancelled")
        return {n: len(self.with_status(n)) for n in names}

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["outdir"] = str(self.outdir)
        payload["package_version"] = __version__
        payload["counts"] = self.counts()
        return payload

    def write(self) -> tuple[Path, Path]:
        """Write summary.json and summary.csv into the output folder (atomically)."""
        json_path, csv_path = self.outdir / SUMMARY_JSON, self.outdir / SUMMARY_CSV
        write_json_atomic(json_path, self.to_dict())
        text = _stringio.StringIO()
        writer = csv.DictWriter(text, _CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for item in self.items:
            row = asdict(item)
            row.update({f"seconds_{k}": f"{v:.3f}" for k, v in item.seconds.items()})
            writer.writerow(row)
        try:
            with atomic_path(csv_path) as tmp:
                tmp.write_text(text.getvalue())
        except OSError as exc:
            raise OutputError(exc.errno, f"cannot write {csv_path}: {exc.strerror}") from exc
        return json_path, csv_path


def _item_from_record(item: ItemResult, record: dict[str, Any]) -> ItemResult:
    for name in ItemResult.__dataclass_fields__:
        if name in record and name not in ("input", "output"):
            setattr(item, name, record[name])
    return item


# --- the output folder -----------------------------------------------------------------------


@contextlib.contextmanager
def _folder_lock(outdir: Path) -> Iterator[None]:
    """One batch run per output folder (released by the OS even if the run is killed)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, go on
        yield
        return
    try:
        handle = open(outdir / LOCK_NAME, "a+")  # held (locked) for the whole run
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write into {outdir}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"another nmsg batch run is writing into {outdir}; wait for it to finish "
                "or choose another output folder"
            ) from None
        except OSError as exc:  # a file system without locks
            warnings.warn(f"cannot lock {outdir} ({exc}); going on without a lock", stacklevel=3)
        yield
    finally:
        handle.close()


def remove_stale_temp_files(outdir: Path, names: Iterable[str]) -> int:
    """Remove ``.<name>.XXXX.part`` files (left by a killed run) for our own output names."""
    ours = set(names)
    removed = 0
    for entry in os.scandir(outdir):
        if not (entry.name.startswith(".") and entry.name.endswith(".part")):
            continue
        name = entry.name[1 : -len(".part")].rsplit(".", 1)[0]
        if name in ours:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


# --- the cluster -------------------------------------------------------------------------------


def local_cluster_size(
    n_tasks: int, device: str = "auto", n_workers: int | None = None
) -> tuple[int, int]:
    """(workers, torch threads per worker) for this machine.

    One worker per GPU if torch uses CUDA; else ``min(n_tasks, cores // 2)`` CPU workers. Each
    worker runs one tomogram at a time and gives torch ``cores // workers`` threads.
    """
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    default = min(n_tasks, gpus) if gpus else min(n_tasks, max(1, cores // 2))
    workers = max(1, n_workers or default)
    return workers, max(1, cores // workers)


@contextlib.contextmanager
def _client(
    scheduler: str | os.PathLike | None,
    n_tasks: int,
    device: str,
    n_workers: int | None,
    memory_limit: str | float | None,
) -> Iterator[tuple[Any, int | None, int | None]]:
    """(Dask client, workers started here or None, torch threads per task or None)."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler is not None:
        target = os.fspath(scheduler)
        try:
            if os.path.isfile(target):
                client = Client(scheduler_file=target, timeout="30s")
            else:
                client = Client(target, timeout="30s")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot connect to the Dask scheduler {target}: {exc}") from exc
        with client:
            yield client, None, None
        return
    workers, threads = local_cluster_size(n_tasks, device, n_workers)
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,  # one tomogram per worker; torch gets `threads` threads
        processes=True,
        memory_limit="auto" if memory_limit is None else memory_limit,
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        yield client, workers, threads


def _dashboard(client: Any, local: bool) -> str | None:
    import importlib.util

    if local and importlib.util.find_spec("bokeh") is None:
        return None
    with contextlib.suppress(Exception):
        return client.dashboard_link
    return None


class _Progress:
    """One tqdm bar over all tomograms; postfix done / skipped / failed / running."""

    def __init__(self, total: int, skipped: int, quiet: bool):
        from tqdm import tqdm

        self.counts = {"done": 0, "skipped": skipped, "failed": 0}
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.lock = threading.Lock()
        self.bar = tqdm(
            total=total, initial=skipped, desc="tomograms", unit="tomo", disable=quiet,
            dynamic_ncols=True, file=sys.stderr,
        )  # fmt: skip
        self._show()

    def _show(self) -> None:
        running = len(self.started - self.finished)
        self.bar.set_postfix(self.counts | {"running": running}, refresh=True)

    def on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("event") in ("start", "end"):
            with self.lock:
                (self.started if msg["event"] == "start" else self.finished).add(msg["index"])
                self._show()

    def finished_one(self, index: int, status: str) -> None:
        with self.lock:
            self.finished.add(index)
            key = status if status in self.counts else "failed"
            self.counts[key] += 1
            self.bar.update(1)
            self._show()

    def write(self, text: str) -> None:
        if not self.bar.disable:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


# --- the driver ----------------------------------------------------------------------------


def _fit_on_selection(inputs: Sequence[Path], n: int) -> list[Path]:
    """``n`` inputs spread evenly over the list (all of them if ``n`` ≥ their number)."""
    if n >= len(inputs):
        return list(inputs)
    return [inputs[(i * len(inputs)) // n] for i in range(n)]


def _plan(inputs: Sequence[Path], outdir: Path) -> list[ItemResult]:
    items, seen = [], {}
    for path in inputs:
        out = output_path(path, outdir)
        if out in seen:
            raise InputError(
                f"{seen[out]} and {path} would both be written to {out}; rename one or run "
                "them into different output folders"
            )
        if out.absolute() == path.absolute():
            raise InputError(f"output {out} would replace its input; choose another folder")
        seen[out] = path
        items.append(ItemResult(str(path), str(out), "pending"))
    return items


class _LazyClient:
    """Start (or connect to) the cluster on first use only: a run with nothing to do
    starts nothing. Calling it returns (client, local workers or None, torch threads)."""

    def __init__(self, stack, summary, scheduler, n_workers, torch_threads, memory_limit,
                 device, say):  # fmt: skip
        self.stack, self.summary, self.say = stack, summary, say
        self.scheduler, self.n_workers, self.memory_limit = scheduler, n_workers, memory_limit
        self.torch_threads, self.device = torch_threads, device
        self.info: tuple[Any, int | None, int | None] | None = None

    def __call__(self) -> tuple[Any, int | None, int | None]:
        if self.info is None:
            todo = sum(i.status == "pending" for i in self.summary.items)
            client, workers, threads = self.stack.enter_context(
                _client(self.scheduler, max(1, todo), self.device, self.n_workers,
                        self.memory_limit)
            )  # fmt: skip
            self.info = (client, workers, self.torch_threads or threads)
            summary = self.summary
            summary.n_workers = workers or len(client.scheduler_info()["workers"])
            summary.scheduler = client.scheduler.address
            summary.dashboard = _dashboard(client, local=self.scheduler is None)
            self.say(f"Dask scheduler {summary.scheduler} with {summary.n_workers} worker(s)")
            self.say(f"Dask dashboard: {summary.dashboard or 'not available (install bokeh)'}")
        return self.info


def _unfinished(items: list[ItemResult], digest: str) -> list[int]:
    """Mark inputs whose output and sidecar pass the quick check as skipped; return the rest."""
    for item in items:
        if item.status != "pending":
            continue
        out = Path(item.output)
        try:
            fingerprint = file_fingerprint(item.input)
        except OSError as exc:
            item.status, item.error = "failed", f"cannot read {item.input}: {exc.strerror}"
            continue
        if sidecar_matches(read_sidecar(sidecar_path(out)), out, digest, fingerprint=fingerprint):
            item.status = "skipped"
    return [i for i, item in enumerate(items) if item.status == "pending"]


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
) -> BatchSummary:
    """Denoise every input tomogram into ``outdir`` on a Dask cluster; resumable.

    ``inputs``: paths, glob patterns or ``@list.txt`` files. ``config``: method settings
    (default: the fast preset). ``model``: a saved model file (inference only), applied
    with its own inference settings except the ``overrides`` the user set explicitly (e.g.
    command-line flags; ``engine.config.inference_settings``). ``fit_on``: fit one model
    on this many of the inputs, then denoise all with it. ``scheduler``: the address
    (``tcp://host:port``) or scheduler file of an existing Dask cluster; without it a
    ``LocalCluster`` of ``n_workers`` workers (default: one per GPU, or ``cores // 2``) is
    started for the run. ``torch_threads``: torch threads per task (default: the worker's
    cores divided by its task slots). ``memory_limit``: per local worker (Dask syntax; 0
    disables Dask's memory policing). Returns a ``BatchSummary``, also written as
    ``summary.json`` / ``summary.csv``; failures are reported there, not raised.
    """
    started = time.perf_counter()
    if model is not None and fit_on is not None:
        raise InputError("use either a saved model or --fit-on, not both")
    if fit_on is not None and fit_on < 1:
        raise InputError(f"--fit-on needs a positive number of tomograms, not {fit_on}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    config = config or NMSGConfig.preset("fast")
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input tomograms given")
    outdir = Path(outdir).absolute()
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot create {outdir}: {exc.strerror}") from exc
    items = _plan(paths, outdir)
    mode = "model" if model else "fit-on" if fit_on else "self"
    summary = BatchSummary(outdir, mode, items)
    own_names = [Path(i.output).name for i in items]
    own_names += [n + SIDECAR_SUFFIX for n in own_names]
    own_names += [SHARED_MODEL_NAME, SHARED_MODEL_NAME + SIDECAR_SUFFIX, SUMMARY_JSON, SUMMARY_CSV]
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr))

    with _folder_lock(outdir), contextlib.ExitStack() as stack:
        try:
            summary.stale_files_removed = remove_stale_temp_files(outdir, own_names)
            client = _LazyClient(stack, summary, scheduler, n_workers, torch_threads,
                                 memory_limit, config.device, say)  # fmt: skip
            applied = config  # whose inference settings the outputs get (fit-on: fitted with it)
            if mode == "model":
                model_path = str(Path(model).absolute())
                # a bad model file is one clear error, before any work
                applied = load_model(model_path).config
                settings = {"mode": "model", "model_blake2b": file_digest(model_path)}
            elif mode == "fit-on":
                model_path = str(outdir / SHARED_MODEL_NAME)
                fitted = _shared_model(paths, fit_on, model_path, config, client, say)
                summary.shared_model = fitted
                if fitted.get("error"):
                    for item in items:
                        item.status, item.error = "failed", f"shared model: {fitted['error']}"
                settings = {"mode": "fit-on", "model_blake2b": fitted.get("model_blake2b")}
            else:
                model_path = None
                settings = {"mode": "self", "config": _config_key(config)}
            inference = inference_settings(applied, overrides)
            settings["inference"] = {k: getattr(inference, k) for k in INFERENCE_FIELDS}
            summary.settings = settings | {"package_version": __version__}
            digest = settings_digest(summary.settings)
            todo = _unfinished(items, digest)
            if todo:
                _run_tasks(
                    items, todo, client, config, summary.settings, digest, model_path,
                    dict(overrides or {}), quiet,
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


def _shared_model(
    paths: Sequence[Path],
    fit_on: int,
    model_path: str,
    config: NMSGConfig,
    client: _LazyClient,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Reuse the shared model in the output folder if it fits these settings, else fit it."""
    chosen = _fit_on_selection(paths, fit_on)
    fit_inputs = []
    for path in chosen:
        try:
            fit_inputs.append({"path": str(path), **file_fingerprint(path)})
        except OSError:
            fit_inputs.append({"path": str(path), "missing": True})
    settings = {
        "config": _config_key(config),
        "fit_inputs": fit_inputs,
        "package_version": __version__,
    }
    digest = settings_digest(settings)
    sidecar = read_sidecar(sidecar_path(Path(model_path)))
    if (
        sidecar
        and sidecar.get("settings_digest") == digest
        and os.path.isfile(model_path)
        and file_digest(model_path) == sidecar.get("model_blake2b")
    ):
        say(f"reusing the shared model {model_path}")
        return sidecar["result"] | {"reused": True, "model_blake2b": sidecar["model_blake2b"]}
    dask_client, _, threads = client()
    say(f"fitting one model on {len(chosen)} tomogram(s) ...")
    future = dask_client.submit(
        run_fit_job,
        [str(p) for p in chosen],
        model_path,
        config.to_dict(),
        threads,
        key=f"nmsg-fit-on-{uuid.uuid4().hex[:8]}",
        pure=False,
    )
    try:
        result = future.result()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "inputs": [str(p) for p in chosen]}
    write_json_atomic(
        sidecar_path(Path(model_path)),
        {
            "format": SIDECAR_FORMAT,
            "format_version": 1,
            "package_version": __version__,
            "settings": settings,
            "settings_digest": digest,
            "model_blake2b": result["model_blake2b"],
            "result": result,
        },
    )
    return result | {"path": model_path, "reused": False}


def _run_tasks(
    items: list[ItemResult],
    todo: list[int],
    client: _LazyClient,
    config: NMSGConfig,
    settings: dict[str, Any],
    digest: str,
    model_path: str | None,
    overrides: dict[str, Any],
    quiet: bool,
) -> None:
    from distributed import as_completed

    dask_client, _, threads = client()
    progress = _Progress(len(items), len(items) - len(todo), quiet)
    dask_client.subscribe_topic(EVENT_TOPIC, progress.on_event)
    run = uuid.uuid4().hex[:8]
    futures = {}
    try:
        for i in todo:
            job = Job(
                i, items[i].input, items[i].output, config.to_dict(), settings, digest,
                model_path, threads, overrides,
            )  # fmt: skip
            future = dask_client.submit(run_job, job, key=f"nmsg-{run}-{i}", pure=False)
            futures[future] = i
        for future in as_completed(futures):
            i = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # the worker died (KilledWorker) or similar
                record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            _item_from_record(items[i], record)
            progress.finished_one(i, items[i].status)
            if items[i].status == "failed":
                progress.write(f"failed: {items[i].input}: {items[i].error}")
    except BaseException:
        for future, i in futures.items():
            if items[i].status == "pending":
                future.cancel()
        raise
    finally:
        with contextlib.suppress(Exception):
            dask_client.unsubscribe_topic(EVENT_TOPIC)
        progress.close()
