"""The driver's side of the Dask cluster: its size, the client (started on first use), and
submitting the tasks and collecting their results."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import InputError
from .inputs import background_path, fit_on_selection
from .resume import (
    config_key,
    file_digest,
    file_fingerprint,
    read_sidecar,
    settings_digest,
    sidecar_path,
    sidecar_payload,
    write_json_atomic,
)
from .summary import BatchSummary, ItemResult, ProgressBar
from .tasks import EVENT_TOPIC, Job, run_fit_job, run_job, usable_cores

if TYPE_CHECKING:
    from ..engine import NMSGConfig


WORKER_MEMORY = 3 * 2**30  # a fast-preset task on a 2 GiB tomogram peaked at 1.3 GB


def local_cluster_size(
    n_tasks: int, device: str = "auto", n_workers: int | None = None, memory: int | None = None
) -> tuple[int, int]:
    """(workers, torch threads per worker) for this machine (``memory``: bytes of RAM).

    One worker per GPU if torch uses CUDA. On CPUs one worker per core, at most one per
    ``WORKER_MEMORY`` of RAM and one per tomogram: small 3D convolutions scale poorly over
    threads, so on 2 cores two one-thread tasks side by side took 0.76–0.80× the time of
    two two-thread tasks in a row. Each worker runs one tomogram at a time and gives torch
    ``cores // workers`` threads.
    """
    import psutil
    import torch

    cores = usable_cores()
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    if gpus:
        default = min(n_tasks, gpus)
    else:
        memory = psutil.virtual_memory().total if memory is None else memory
        default = min(n_tasks, cores, max(1, memory // WORKER_MEMORY))
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
    with _driver_environment_kept():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # one tomogram per worker; torch gets `threads` threads
            processes=True,
            memory_limit="auto" if memory_limit is None else memory_limit,
            silence_logs=logging.ERROR,
        )
        with cluster, Client(cluster) as client:
            yield client, workers, threads


@contextlib.contextmanager
def _driver_environment_kept() -> Iterator[None]:
    """Dask's nanny writes its worker variables (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_)
    into this process's environment before it spawns a worker; put them back afterwards, so
    that what the caller starts later (an ``nmsg denoise`` subprocess) is not slowed."""
    import dask

    names = {*dask.config.get("distributed.nanny.pre-spawn-environ", {}), "PYTHONHASHSEED"}
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _dashboard(client: Any, local: bool) -> str | None:
    import importlib.util

    if local and importlib.util.find_spec("bokeh") is None:
        return None
    with contextlib.suppress(Exception):
        return client.dashboard_link
    return None


class LazyClient:
    """Start (or connect to) the cluster on first use only: a run with nothing to do
    starts nothing. Calling it returns (client, local workers or None, torch threads)."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        summary: BatchSummary,
        scheduler: str | os.PathLike | None,
        n_workers: int | None,
        torch_threads: int | None,
        memory_limit: str | float | None,
        device: str,
        say: Callable[[str], None],
    ) -> None:
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


def _fingerprint_or_missing(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return file_fingerprint(path)
    except OSError:
        return {"missing": True}


def shared_model(
    paths: Sequence[Path],
    fit_on: int,
    model_path: str,
    config: NMSGConfig,
    client: LazyClient,
    say: Callable[[str], None],
    level: int | str | None = None,
    background: str | None = None,
) -> dict[str, Any]:
    """Reuse the shared model in the output folder if it fits these settings and files,
    else fit it (on ``level`` of the OME-Zarr inputs, with the masks the ``background``
    template names)."""
    chosen = fit_on_selection(paths, fit_on)
    masks = None if background is None else [str(background_path(p, background)) for p in chosen]
    fit_inputs = []
    for i, path in enumerate(chosen):
        entry = {"path": str(path), **_fingerprint_or_missing(path)}
        if masks is not None:  # only then: earlier shared models stay reusable
            entry["background"] = {"path": masks[i], **_fingerprint_or_missing(masks[i])}
        fit_inputs.append(entry)
    settings = {
        "config": config_key(config),
        "fit_inputs": fit_inputs,
        "package_version": __version__,
    }
    if level is not None:  # only then: earlier shared models stay reusable
        settings["level"] = level
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
        level,
        masks,
        key=f"nmsg-fit-on-{uuid.uuid4().hex[:8]}",
        pure=False,
    )
    try:
        result = future.result()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "inputs": [str(p) for p in chosen]}
    payload = sidecar_payload(
        settings=settings,
        settings_digest=digest,
        model_blake2b=result["model_blake2b"],
        result=result,
    )
    write_json_atomic(sidecar_path(Path(model_path)), payload)
    return result | {"path": model_path, "reused": False}


def run_tasks(
    items: list[ItemResult],
    todo: list[int],
    client: LazyClient,
    config: NMSGConfig,
    settings: dict[str, Any],
    digest: str,
    model_path: str | None,
    overrides: dict[str, Any],
    quiet: bool,
    io: dict[str, Any] | None = None,
) -> None:
    """Run one task per ``todo`` item on the cluster and fill in the items as they finish.
    ``io``: ``denoise_file``'s level, levels and voxel_size for every item."""
    from distributed import as_completed

    dask_client, _, threads = client()
    progress = ProgressBar(len(items), len(items) - len(todo), quiet)
    dask_client.subscribe_topic(EVENT_TOPIC, progress.on_event)
    run = uuid.uuid4().hex[:8]
    futures = {}
    try:
        for i in todo:
            job = Job(
                i, items[i].input, items[i].output, config.to_dict(), settings, digest,
                model_path, threads, overrides, dict(io or {}), items[i].background,
            )  # fmt: skip
            future = dask_client.submit(run_job, job, key=f"nmsg-{run}-{i}", pure=False)
            futures[future] = i
        for future in as_completed(futures):
            i = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # the worker died (KilledWorker) or similar
                record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            items[i].update(record)
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
