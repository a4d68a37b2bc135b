"""Make ``docs/screenshot.png``: napari with the *NMSG denoising* widget docked, after Learn
noise and Denoise on the simulated sample, with Compare on (raw left, denoised right).

It drives the real widget exactly as a user would (the buttons' methods), so it doubles as
an end-to-end check. Needs a display; on a headless machine::

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python docs/make_screenshot.py

With the defaults (the fast preset as shipped: two U-Net levels with additive skips, 1600
steps) Learn noise and Denoise took 0.6 s and 69 s on a 2-core Intel Xeon with AMX under
Xvfb.
``benchmarks/widget_speed.py`` times the same Denoise opened from an MRC file against the
engine alone (1.08-1.14x with the two-level U-Net of then).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent


def run_and_wait(widget, start, timeout: float) -> str:
    """Click a button's method and run Qt's event loop, as napari's own, until the run ends.

    A real loop matters for timing: polling ``processEvents`` never runs deferred deletes,
    so napari's activity spinner would keep animating and redrawing the window.
    """
    outcome: list[str] = []
    loop = QEventLoop()

    def finished(task, status: str) -> None:
        outcome.append(status)
        loop.quit()

    widget.run_finished.connect(finished)
    if start() is None:
        raise RuntimeError("the run did not start")
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    deadline.start(round(timeout * 1000))
    loop.exec_()
    deadline.stop()
    widget.run_finished.disconnect(finished)
    if not outcome:
        widget.cancel()
        raise TimeoutError("the run took too long")
    return outcome[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "screenshot.png")
    parser.add_argument("--size", type=int, default=64, help="edge of the simulated cube")
    parser.add_argument("--steps", type=int, help="denoiser training steps (default: preset)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--noise-shot", type=Path, default=None, help="also save the view after Learn noise"
    )
    args = parser.parse_args()

    viewer = napari.Viewer(title="napari-nmsg", show=True)
    viewer.window.resize(1400, 860)
    viewer.open_sample("napari-nmsg", "simulated_tomogram")
    raw = viewer.layers["simulated tomogram"]
    if args.size != 64:  # a different cube size, same simulator
        from napari_nmsg._sample_data import make_sample_data

        viewer.layers.clear()
        noisy, truth = make_sample_data((args.size,) * 3)
        raw = viewer.add_image(noisy[0], **noisy[1])
        viewer.add_image(truth[0], **truth[1])
    _, widget = viewer.window.add_plugin_dock_widget("napari-nmsg", "NMSG denoising")
    widget.preset_combo.setCurrentText("fast")
    if args.steps:
        widget.fields["train_steps"].setValue(args.steps)
    widget.fields["preview_every"].setValue(max(1, widget.fields["train_steps"].value() // 6))
    viewer.dims.set_point(0, raw.data.shape[0] // 2 * raw.scale[0])

    for name, start in (("Learn noise", widget.learn_noise), ("Denoise", widget.denoise)):
        began = time.monotonic()
        status = run_and_wait(widget, start, args.timeout)
        print(f"{name}: {status} in {time.monotonic() - began:.1f} s — {widget.status.text()}")
        if status != "done":
            raise SystemExit(1)
        if name == "Learn noise" and args.noise_shot:
            viewer.reset_view()
            shoot(viewer, args.noise_shot)
    print(widget.fidelity.text())
    widget.compare(True)
    shoot(viewer, args.output)
    viewer.close()


def shoot(viewer, path: Path) -> None:
    """Let the canvas draw, then save a screenshot of the whole window."""
    for _ in range(20):
        QApplication.instance().processEvents()
        time.sleep(0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
