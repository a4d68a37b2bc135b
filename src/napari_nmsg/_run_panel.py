"""The run panel: a running task's progress bar, its Cancel button and the status lines.

Self-contained over a :class:`~._task_worker.TaskRunner`, so the main widget only starts
runs and reacts to what they produce: the panel turns engine ``Progress`` events into the
bar's stage, count and ETA and the latest losses, and says how each run ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ._progress import StageClock, format_duration, format_metrics
from ._task_worker import Outcome, Stream, Task, TaskRunner
from .engine import Progress

BAR_STEPS = 1000  # the bar's range: fine enough for thousands of training steps
# Training reports every step, 10-20 times a second. Each redraw of the bar makes Qt
# recompose the whole window with the viewer's OpenGL canvas; in software OpenGL (remote
# desktops, Xvfb) that took enough CPU from the training to slow it 1.5x. Measured on
# 2 cores: 5 redraws a second still cost 1.5x, 1 a second nothing.
REDRAW_INTERVAL_MS = 1000


def _line() -> QLabel:
    """A status line the user can select and copy (e.g. an error to report)."""
    label = QLabel()
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class RunPanel(QWidget):
    """Progress bar and Cancel over one task at a time, then status, losses, fidelity, model.

    Signals: ``task_event(task, event)`` for every event of the current run, after the bar
    showed it; ``task_finished(outcome, message)`` when a run ends, after the bar and the
    status line said how (``message`` is that line, empty for a run that is done, whose
    result only its starter can describe).
    """

    task_event = Signal(object, object)
    task_finished = Signal(object, str)

    def __init__(self, labels: Mapping[str, str], parent: QWidget | None = None):
        """``labels`` name the tasks in messages, e.g. ``{"learn": "Learn noise"}``."""
        super().__init__(parent)
        self._labels = dict(labels)
        self._runner = TaskRunner(self._on_event, self._on_finished)
        self._clock = StageClock()
        self._pending: tuple[float, str, str | None] | None = None  # latest, not yet drawn
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_INTERVAL_MS)
        self._redraw.timeout.connect(self._draw_progress)
        self.progress = QProgressBar()
        self.progress.setRange(0, BAR_STEPS)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Idle")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run at its next step")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda: self.cancel())
        self.status = _line()
        self.losses = _line()
        self.fidelity = _line()
        self.model_info = _line()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.cancel_button)
        layout.addLayout(bar)
        for label in (self.status, self.losses, self.fidelity, self.model_info):
            layout.addWidget(label)

        runner = self._runner  # not self: the callback runs while the Qt object goes away
        self.destroyed.connect(lambda *_: runner.shutdown())

    @property
    def task(self) -> Task | None:
        """The running task, or ``None`` when idle."""
        return self._runner.task

    @property
    def busy(self) -> bool:
        return self._runner.busy

    def start(self, name: str, stream: Stream, text: str, **context: Any) -> Task:
        """Run ``stream()`` in a worker; ``text`` says what runs until the first step."""
        task = self._runner.start(name, stream, **context)
        self._clock = StageClock()
        self._redraw.stop()
        self._pending = None
        self.progress.setValue(0)
        self.progress.setFormat("Starting…")
        self.status.setText(text)
        self.losses.setText("")
        self.cancel_button.setEnabled(True)
        return task

    def cancel(self, reason: str = "cancelled") -> bool:
        """Stop the running task at its next step (within about a second).

        ``reason`` other than ``"cancelled"`` (e.g. a deleted layer) is said as why it
        stopped. ``False`` if nothing runs.
        """
        if not self._runner.cancel(reason):
            return False
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling…")
        return True

    def shutdown(self) -> None:
        """Stop the running task and report nothing more (the widget is going away)."""
        self._runner.shutdown()

    def label(self, task: Task) -> str:
        return self._labels.get(task.name, task.name)

    @staticmethod
    def elapsed(task: Task) -> str:
        """How long ``task`` has run, as ``"1:15"``."""
        return format_duration(task.elapsed)

    def _on_event(self, task: Task, event: Any) -> None:
        if isinstance(event, Progress):
            fraction, text = self._clock.text(event.stage, event.step, event.total)
            losses = f"Latest: {format_metrics(event.metrics)}" if event.metrics else None
            if losses is None and self._pending is not None:
                losses = self._pending[2]
            self._pending = (fraction, text, losses)
            if not self._redraw.isActive():
                self._draw_progress()
        self.task_event.emit(task, event)

    def _draw_progress(self) -> None:
        """Draw the latest progress, then hold further redraws for one interval."""
        if self._pending is None:
            return
        (fraction, text, losses), self._pending = self._pending, None
        self.progress.setValue(round(BAR_STEPS * fraction))
        self.progress.setFormat(text)
        if losses is not None:
            self.losses.setText(losses)
        self._redraw.start()

    def _on_finished(self, outcome: Outcome) -> None:
        task, label = outcome.task, self.label(outcome.task)
        self._draw_progress()  # the last losses too, if their redraw was being held
        self._redraw.stop()
        self.cancel_button.setEnabled(False)
        if outcome.status == "done":
            self.progress.setValue(BAR_STEPS)
            bar, message = "Done", ""
        elif outcome.status == "failed":
            bar, message = "Failed", f"{label} failed: {outcome.error}"
        elif task.cancel_reason == "cancelled":
            bar, message = "Cancelled", f"{label} cancelled after {self.elapsed(task)}."
        else:
            bar, message = "Stopped", f"{label} stopped: {task.cancel_reason}."
        self.progress.setFormat(bar)
        if message:
            self.status.setText(message)
        self.task_finished.emit(outcome, message)
