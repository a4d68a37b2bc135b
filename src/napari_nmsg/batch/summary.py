"""What a run reports: one ``ItemResult`` per input, the ``BatchSummary`` written as
summary.json / summary.csv, and the progress bar on the driver."""

from __future__ import annotations

import csv
import sys
import threading
from dataclasses import asdict, dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from .._version import __version__
from .resume import write_json_atomic, write_text_atomic

SUMMARY_JSON, SUMMARY_CSV = "summary.json", "summary.csv"
FAILED_EXIT_CODE = 3


@dataclass
class ItemResult:
    """What happened to one input."""

    input: str
    output: str
    status: str  # done / skipped / failed / cancelled
    error: str | None = None
    background: str | None = None  # the mask the noise was learned in (--background)
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

    def update(self, record: dict[str, Any]) -> None:
        """Take the fields of a task's record (which never renames the files it was given)."""
        for name in self.__dataclass_fields__:
            if name in record and name not in ("input", "output", "background"):
                setattr(self, name, record[name])


_CSV_COLUMNS = [
    "input", "output", "status", "error", "background", "seconds_total", "seconds_hash",
    "seconds_read", "seconds_fit", "seconds_denoise", "worker", "device", "torch_threads",
    "peak_rss_mb", "rss_anon_mb", "rss_file_mb", "gpu_peak_mb",
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
        text = StringIO()
        writer = csv.DictWriter(text, _CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for item in self.items:
            row = asdict(item)
            row.update({f"seconds_{k}": f"{v:.3f}" for k, v in item.seconds.items()})
            writer.writerow(row)
        write_text_atomic(csv_path, text.getvalue())
        return json_path, csv_path


class ProgressBar:
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
        """A task's start / end message (``tasks.announce``), from the Dask event topic."""
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
