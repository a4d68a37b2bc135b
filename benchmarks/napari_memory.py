"""Memory of a real napari session denoising a ~2 GB tomogram from the widget.

    xvfb-run -a python benchmarks/napari_memory.py                  # 512×1024×1024 (2 GiB)
    xvfb-run -a python benchmarks/napari_memory.py --shape 256,1024,1024 --steps 200

A fresh process starts napari (a real window, under Xvfb), opens the MRC through the
plugin's reader (memory-mapped), docks the widget and clicks *Denoise* with the fast preset,
while a thread samples its ``/proc/self/status``. The report gives napari's own baseline, the
peak RSS (``VmHWM``, which also counts resident pages of the memory-mapped input and output:
page cache the kernel may drop) and the growth of the anonymous part during the run (heap:
what really has to fit in RAM), against the tomogram's size. The denoised layer is a
memory-mapped scratch file, so it should not add its size to either.

The tomogram is ``out_of_core.synthetic_slab``'s blobs and white noise, written slab by slab
(never held in RAM); the point is memory, not denoising. ``--steps`` shortens training, which
changes the time but not what is held in memory. The big files go to ``--tmp`` and are
deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    log,
    machine_info,
    machine_markdown,
    peak_rss_mb,
    rss_now_mb,
    save_figure,
    write_json,
    write_report,
)
from _table import Column, render_table
from out_of_core import write_big_mrc

PEAK_LIMIT_MB = 2.5 * 1024  # the targets: peak RSS of the session, napari included
ANON_GROWTH_LIMIT = 0.75  # anonymous memory growth during the run / tomogram size


def session(path: Path, steps: int | None, result_path: Path) -> None:
    """Run in the fresh process: napari, the reader, the widget, one Denoise run."""
    samples: list[dict[str, float]] = []
    marks: dict[str, float] = {}
    started = time.perf_counter()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append({"t": time.perf_counter() - started, **rss_now_mb()})
            stop.wait(0.25)

    def mark(name: str) -> None:
        marks[name] = time.perf_counter() - started
        samples.append({"t": marks[name], **rss_now_mb()})
        log(f"{name}: {samples[-1]}")

    threading.Thread(target=sample, daemon=True).start()
    import napari
    from qtpy.QtCore import QEventLoop

    viewer = napari.Viewer(show=True)
    mark("napari started")
    [layer] = viewer.open(str(path), plugin="napari-nmsg")
    mark("tomogram opened")
    _, widget = viewer.window.add_plugin_dock_widget("napari-nmsg", "NMSG denoising")
    widget.preset_combo.setCurrentText("fast")
    if steps:
        widget.fields["train_steps"].setValue(steps)
    stages: list[tuple[str, float]] = []

    def on_event(_task: Any, event: Any) -> None:
        stage = getattr(event, "stage", None)
        if stage and (not stages or stages[-1][0] != stage):
            stages.append((stage, time.perf_counter() - started))

    widget.run_panel.task_event.connect(on_event)
    loop = QEventLoop()
    outcome: list[str] = []
    widget.run_finished.connect(lambda task, status: (outcome.append(status), loop.quit()))
    mark("run started")
    widget.denoise()
    loop.exec_()
    mark("run finished")
    stop.set()
    output = widget.output_layer(layer)
    scratch = widget.session.scratch.path_of(output.data)
    result = {
        "status": outcome[0],
        "message": widget.status.text(),
        "marks": marks,
        "stages": stages,
        "samples": samples,
        "peak_rss_mb": peak_rss_mb(),
        "output_is_memory_mapped": scratch is not None,
        "config": widget.config().to_dict(),
    }
    write_json(result_path, result)
    viewer.close()


def summarise(result: dict[str, Any], tomogram_mb: float) -> dict[str, float]:
    """napari's baseline, the values at each mark, and the peaks during the run."""
    marks, samples = result["marks"], result["samples"]

    def at(name: str) -> dict[str, float]:
        return min(samples, key=lambda s: abs(s["t"] - marks[name]))

    during = [s for s in samples if marks["run started"] <= s["t"] <= marks["run finished"]]
    before = at("run started")
    peak_anon = max(s["anon"] for s in during)
    return {
        "tomogram_mb": tomogram_mb,
        "napari_rss_mb": at("napari started")["rss"],
        "napari_anon_mb": at("napari started")["anon"],
        "opened_rss_mb": at("tomogram opened")["rss"],
        "before_run_anon_mb": before["anon"],
        "peak_anon_mb": peak_anon,
        "peak_file_mb": max(s["file"] for s in during),
        "anon_growth_mb": peak_anon - before["anon"],
        "anon_growth_ratio": (peak_anon - before["anon"]) / tomogram_mb,
        "peak_rss_mb": result["peak_rss_mb"],
        "run_s": marks["run finished"] - marks["run started"],
    }


def render(report: dict[str, Any]) -> str:
    s = report["summary"]
    rows = [
        ("napari started (baseline)", s["napari_rss_mb"], s["napari_anon_mb"], "", ""),
        ("tomogram opened (memory-mapped)", s["opened_rss_mb"], None, "", ""),
        ("before Denoise", None, s["before_run_anon_mb"], "", ""),
        (
            "peak during the run",
            s["peak_rss_mb"],
            s["peak_anon_mb"],
            f"≤ {PEAK_LIMIT_MB:.0f}: {'met' if s['peak_rss_mb'] <= PEAK_LIMIT_MB else 'NOT met'}",
            "",
        ),
        (
            "anonymous growth during the run",
            None,
            s["anon_growth_mb"],
            "",
            f"{s['anon_growth_ratio']:.2f}× the tomogram (≤ {ANON_GROWTH_LIMIT}: "
            f"{'met' if s['anon_growth_ratio'] <= ANON_GROWTH_LIMIT else 'NOT met'})",
        ),
    ]
    columns = [
        Column("when", lambda r: r[0]),
        Column("RSS (MB)", lambda r: r[1], ".0f"),
        Column("anonymous (MB)", lambda r: r[2], ".0f"),
        Column("peak target", lambda r: r[3]),
        Column("growth target", lambda r: r[4]),
    ]
    stages = ", ".join(f"{name} from {t:.0f} s" for name, t in report["result"]["stages"])
    return "\n\n".join(
        [
            "# napari session memory: Denoise from the widget on a memory-mapped tomogram",
            f"Command: `{report['command']}`",
            machine_markdown(report["machine"], report.get("end_load")),
            f"Tomogram {report['shape']} float32 ({s['tomogram_mb']:.0f} MB), opened with the "
            f"plugin's reader; fast preset, {report['result']['config']['train_steps']} training "
            f"steps; run {report['result']['status']} in {s['run_s']:.0f} s ({stages}). "
            f"Output layer memory-mapped: {report['result']['output_is_memory_mapped']}. "
            f"Peak file-backed RSS during the run {s['peak_file_mb']:.0f} MB (page cache of "
            "the input and output maps, which the kernel may drop).",
            render_table(rows, columns),
            "![memory over time](napari_memory.png)",
        ]
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, marks = report["result"]["samples"], report["result"]["marks"]
    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label in (("rss", "RSS"), ("anon", "anonymous"), ("file", "file-backed")):
        ax.plot(t, [s[key] for s in samples], label=label)
    ax.axhline(report["summary"]["tomogram_mb"], color="grey", ls=":", label="tomogram size")
    for name, at in marks.items():
        ax.axvline(at, color="k", lw=0.5, alpha=0.4)
        ax.text(at, ax.get_ylim()[1] * 0.98, name, rotation=90, va="top", fontsize=7)
    ax.set_xlabel("seconds since the process started")
    ax.set_ylabel("MB")
    ax.legend(loc="center right", fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="512,1024,1024", help="Z,Y,X (default: 2 GiB)")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the big files")
    parser.add_argument("--out", default=str(DEFAULT_OUT / "napari_memory"))
    parser.add_argument("--_session", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._session:
        path, steps, result = args._session
        session(Path(path), int(steps) or None, Path(result))
        return 0
    shape = tuple(int(v) for v in args.shape.split(","))
    work = Path(tempfile.mkdtemp(prefix="nmsg-napari-memory-", dir=args.tmp))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        path = work / "tomogram.mrc"
        log(f"writing {shape} to {path}: {write_big_mrc(path, shape, seed=0):.0f} s")
        started = machine_info()
        env = {**os.environ, "NAPARI_NMSG_SCRATCH": str(work / "scratch")}
        result_path = work / "session.json"
        cmd = [sys.executable, __file__, "--_session", str(path), str(args.steps or 0),
               str(result_path)]  # fmt: skip
        import subprocess

        subprocess.run(cmd, env=env, check=True)
        result = json.loads(result_path.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tomogram_mb = 4 * shape[0] * shape[1] * shape[2] / 2**20
    report = {
        "command": "xvfb-run -a python benchmarks/napari_memory.py "
        + " ".join(a for a in (argv if argv is not None else sys.argv[1:])),
        "machine": started,
        "end_load": list(os.getloadavg()),
        "shape": list(shape),
        "summary": summarise(result, tomogram_mb),
        "result": result,
    }
    write_report(out, "napari_memory", report, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
