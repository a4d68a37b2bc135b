"""The run panel over plain generators (Qt, no viewer, no engine run)."""

from __future__ import annotations

import time

import pytest

from napari_nmsg._run_panel import BAR_STEPS, REDRAW_INTERVAL_MS, RunPanel
from napari_nmsg.engine import Progress

LABELS = {"learn": "Learn noise", "denoise": "Denoise"}


@pytest.fixture
def panel(qtbot):
    panel = RunPanel(LABELS)
    qtbot.addWidget(panel)
    return panel


def endless():
    """A run that only stops when cancelled."""
    yield Progress("train", 1, 4, {"loss": 0.5, "rec": 0.25})
    while True:
        time.sleep(0.01)
        yield Progress("train", 2, 4)


def test_idle_panel_cannot_cancel(panel):
    assert panel.progress.format() == "Idle" and not panel.busy
    assert not panel.cancel_button.isEnabled()
    assert panel.cancel() is False


def test_progress_shows_stage_and_losses_and_cancel_works_only_while_running(panel, qtbot):
    panel.start("learn", endless, "Learning…")
    assert panel.status.text() == "Learning…" and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.progress.format().startswith("Training the denoiser 2/4"))
    assert panel.losses.text() == "Latest: loss 0.5 · rec 0.25"
    assert panel.progress.value() == BAR_STEPS // 2
    with qtbot.waitSignal(panel.task_finished, timeout=5_000) as finished:
        panel.cancel_button.click()
        assert not panel.cancel_button.isEnabled() and panel.status.text() == "Cancelling…"
    outcome, message = finished.args
    assert outcome.status == "cancelled" and message.startswith("Learn noise cancelled after")
    assert panel.status.text() == message and panel.progress.format() == "Cancelled"
    assert not panel.busy and not panel.cancel_button.isEnabled()


def test_a_burst_of_steps_redraws_the_bar_a_few_times_and_ends_on_the_latest(panel, qtbot):
    steps = 500

    def burst():
        for step in range(1, steps + 1):
            time.sleep(0.001)
            yield Progress("train", step, steps, {"loss": 0.5} if step == 1 else None)
        while True:  # idle until cancelled, so the bar's last state can be read
            time.sleep(0.01)
            yield Progress("train", steps, steps)

    values = []
    panel.progress.valueChanged.connect(values.append)
    events = []
    panel.task_event.connect(lambda task, event: events.append(event))
    began = time.monotonic()
    panel.start("denoise", burst, "Denoising…")
    qtbot.waitUntil(lambda: panel.progress.format() == f"Training the denoiser {steps}/{steps}")
    redraws_allowed = 2 + (time.monotonic() - began) * 1000 / REDRAW_INTERVAL_MS
    assert len([e for e in events if e.step < steps]) == steps - 1  # every event got through
    assert 1 <= len(values) <= redraws_allowed < steps / 10
    assert values[-1] == BAR_STEPS and panel.losses.text() == "Latest: loss 0.5"
    with qtbot.waitSignal(panel.task_finished, timeout=5_000):
        panel.cancel()


def test_stopped_for_a_reason_says_why(panel, qtbot):
    panel.start("denoise", endless, "Denoising…")
    with qtbot.waitSignal(panel.task_finished, timeout=5_000) as finished:
        assert panel.cancel("the input layer 'x' was deleted")
    assert finished.args[1] == "Denoise stopped: the input layer 'x' was deleted."
    assert panel.progress.format() == "Stopped"


def test_done_and_failed_runs(panel, qtbot):
    def quick():
        yield Progress("denoise", 1, 2, {"loss": 0.5})
        yield Progress("denoise", 2, 2, {"loss": 0.25})  # drawn at the end, not a second later
        return 42

    events = []
    panel.task_event.connect(lambda task, event: events.append(event))
    with qtbot.waitSignal(panel.task_finished, timeout=5_000) as finished:
        panel.start("denoise", quick, "Denoising…")
    outcome, message = finished.args
    assert (outcome.status, outcome.result, message) == ("done", 42, "")
    assert events == [
        Progress("denoise", 1, 2, {"loss": 0.5}),
        Progress("denoise", 2, 2, {"loss": 0.25}),
    ]
    assert panel.progress.value() == BAR_STEPS and panel.progress.format() == "Done"
    assert panel.losses.text() == "Latest: loss 0.25"

    def broken():
        yield Progress("denoise", 1, 2)
        raise ValueError("bad input")

    with qtbot.waitSignal(panel.task_finished, timeout=5_000) as finished:
        panel.start("denoise", broken, "Denoising…")
    assert finished.args[0].status == "failed"
    assert panel.status.text() == "Denoise failed: bad input"
    assert panel.progress.format() == "Failed"
