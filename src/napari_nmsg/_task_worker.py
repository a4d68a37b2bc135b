"""Run one engine generator at a time in a napari thread worker, tagging every run with an id.

The widget only ever talks to the *current* task. When a run is cancelled (button, deleted
layer, closed widget) its late events, already queued for the GUI thread, are dropped by id,
so a stale preview can never land in a layer and a stale result never replaces a new one.
Exceptions are caught inside the worker and reported as an :class:`Outcome`, so the widget
decides how to tell the user (one line for bad input, a traceback only for real bugs).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker

Stream = Callable[[], Generator[Any, None, Any]]


@dataclass(eq=False)
class Task:
    """One background run: what it is, what it works on, and how it ended."""

    id: int
    name: str
    context: dict[str, Any] = field(default_factory=dict)
    worker: GeneratorWorker | None = None
    started: float = field(default_factory=time.monotonic)
    cancel_reason: str | None = None  # set when the run was stopped on purpose
    result: Any = None
    error: Exception | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the task started."""
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Outcome:
    """How a task ended: ``status`` is ``"done"``, ``"cancelled"`` or ``"failed"``."""

    task: Task
    status: str

    @property
    def result(self) -> Any:
        return self.task.result

    @property
    def error(self) -> Exception | None:
        return self.task.error


class _Failure:
    """Carries an exception out of the worker as a return value (never raised in Qt)."""

    def __init__(self, error: Exception):
        self.error = error


class TaskRunner:
    """At most one running task; events of any other (cancelled, older) task are ignored."""

    def __init__(
        self,
        on_event: Callable[[Task, Any], None],
        on_finished: Callable[[Outcome], None],
    ):
        self._on_event = on_event
        self._on_finished = on_finished
        self._ids = itertools.count(1)
        self._current: Task | None = None
        self._closed = False

    @property
    def task(self) -> Task | None:
        """The running task, or ``None`` when idle."""
        return self._current

    @property
    def busy(self) -> bool:
        return self._current is not None

    def start(self, name: str, stream: Stream, **context: Any) -> Task:
        """Run ``stream()`` (an engine generator) in a thread; events reach ``on_event``."""
        if self._closed:
            raise RuntimeError("this task runner has been shut down")
        if self._current is not None:
            raise RuntimeError(f"already running {self._current.name!r}")
        task = Task(next(self._ids), name, dict(context))

        def run():
            try:
                return (yield from stream())
            except Exception as exc:  # reported through Outcome, see module docstring
                return _Failure(exc)

        worker = create_worker(run, _start_thread=False)
        worker.yielded.connect(lambda event: self._deliver(task, event))
        worker.returned.connect(lambda value: self._store(task, value))
        worker.finished.connect(lambda: self._finish(task))
        task.worker = worker
        self._current = task
        worker.start()
        return task

    def cancel(self, reason: str = "cancelled") -> bool:
        """Ask the running task to stop at its next yield; ``False`` if nothing runs."""
        task = self._current
        if task is None:
            return False
        if task.cancel_reason is None:
            task.cancel_reason = reason
        if task.worker is not None:
            task.worker.quit()
        return True

    def shutdown(self) -> None:
        """Stop the running task and deliver nothing more (the widget is going away)."""
        self._closed = True
        self.cancel("closed")

    def _live(self, task: Task) -> bool:
        return not self._closed and task is self._current and task.cancel_reason is None

    def _deliver(self, task: Task, event: Any) -> None:
        if self._live(task):
            self._on_event(task, event)

    def _store(self, task: Task, value: Any) -> None:
        if isinstance(value, _Failure):
            task.error = value.error
        else:
            task.result = value

    def _finish(self, task: Task) -> None:
        if task is not self._current:
            return
        self._current = None
        if self._closed:
            return
        if task.cancel_reason is not None:
            status = "cancelled"
        elif task.error is not None:
            status = "failed"
        else:
            status = "done"
        self._on_finished(Outcome(task, status))
