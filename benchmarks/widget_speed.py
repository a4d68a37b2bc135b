"""Does the napari widget denoise as fast as the engine alone? Same file, same settings.

    xvfb-run -a -s "-screen 0 1400x900x24" python benchmarks/widget_speed.py
    xvfb-run -a python benchmarks/widget_speed.py --size 96 --steps 600 --repeats 2

Fresh processes one after another, alternating: the widget (``napari_memory.py``'s session:
a real napari window, the plugin's reader, *Denoise* with the fast preset, timed from the
click to the end of the run) and ``denoise_file`` on the same MRC with the widget's own
settings in a plain script's main thread. Each run also records the CPU time the hypervisor
took from this machine meanwhile (``steal`` in ``/proc/stat``): on a shared virtual machine
it moves timings more than most things measured here, so compare the ratio within a repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, log, machine_info, machine_markdown, save_figure, write_report

HERE = Path(__file__).resolve().parent


def steal_seconds() -> float:
    """CPU seconds stolen by the hypervisor so far, all CPUs together."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def widget_run(path: Path, steps: int, work: Path) -> dict[str, Any]:
    """Denoise in napari (fresh process); seconds from the click to the run's end."""
    result_path = work / "session.json"
    env = {**os.environ, "NAPARI_NMSG_SCRATCH": str(work / "scratch")}
    cmd = [sys.executable, str(HERE / "napari_memory.py"), "--_session", str(path), str(steps),
           str(result_path)]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    session = json.loads(result_path.read_text())
    marks = session["marks"]
    return {
        "seconds": marks["run finished"] - marks["run started"],
        "status": session["status"],
        "train_steps": session["config"]["train_steps"],
        "config": session["config"],
    }


def engine_run(path: Path, config: dict[str, Any], work: Path) -> dict[str, Any]:
    """``denoise_file`` with the same settings in a fresh process's main thread."""
    script = (
        "import json, sys, time\n"
        "from napari_nmsg import NMSGConfig, denoise_file\n"
        "config = NMSGConfig.from_dict(json.loads(sys.argv[3]))\n"
        "began = time.perf_counter()\n"
        "denoise_file(sys.argv[1], sys.argv[2], config)\n"
        "print(time.perf_counter() - began)\n"
    )
    out = work / "engine.mrc"
    cmd = [sys.executable, "-c", script, str(path), str(out), json.dumps(config)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    out.unlink()
    return {"seconds": float(done.stdout.split()[-1]), "status": "done"}


def timed(run: Any, *args: Any) -> dict[str, Any]:
    before = steal_seconds()
    result = run(*args)
    return {**result, "steal_s": steal_seconds() - before}


def render(report: dict[str, Any]) -> str:
    lines = [
        "# Widget vs engine: the same Denoise",
        "",
        machine_markdown(report["machine"], report["end_load"]),
        "",
        f"Command: `{report['command']}`",
        "",
        f"Volume: the simulated {report['size']}³ sample, fast preset, "
        f"{report['steps']} training steps. Wall seconds of the whole run (noise learning, "
        "training, validation, inference); steal = CPU seconds the hypervisor took meanwhile.",
        "",
        "| repeat | widget s | engine s | widget / engine | steal s (widget, engine) |",
        "|---|---|---|---|---|",
    ]
    for i, (w, e) in enumerate(zip(report["widget"], report["engine"], strict=True), 1):
        lines.append(
            f"| {i} | {w['seconds']:.1f} | {e['seconds']:.1f} | "
            f"{w['seconds'] / e['seconds']:.2f} | {w['steal_s']:.1f}, {e['steal_s']:.1f} |"
        )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    repeats = range(1, len(report["widget"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for offset, name in ((-0.2, "widget"), (0.2, "engine")):
        seconds = [run["seconds"] for run in report[name]]
        ax.bar([r + offset for r in repeats], seconds, width=0.4, label=name)
    ax.set_xticks(list(repeats))
    ax.set_xlabel("repeat")
    ax.set_ylabel("wall seconds")
    ax.set_title(f"Denoise {report['size']}³, fast preset, {report['steps']} steps", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="edge of the simulated cube")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(DEFAULT_OUT / "widget_speed"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    widget: list[dict[str, Any]] = []
    engine: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nmsg-widget-speed-") as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "napari_nmsg.cli", "simulate", str(work / "sim"),
             "--size", str(args.size)], check=True, capture_output=True,
        )  # fmt: skip
        path = work / "sim" / "noisy.mrc"
        for repeat in range(1, args.repeats + 1):
            widget.append(timed(widget_run, path, args.steps or 0, work))
            engine.append(timed(engine_run, path, widget[-1].pop("config"), work))
            log(f"repeat {repeat}: widget {widget[-1]['seconds']:.1f} s, "
                f"engine {engine[-1]['seconds']:.1f} s")  # fmt: skip
    report = {
        "command": "xvfb-run -a python benchmarks/widget_speed.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "end_load": list(os.getloadavg()),
        "size": args.size,
        "steps": widget[0]["train_steps"],
        "widget": widget,
        "engine": engine,
    }
    write_report(out, "widget_speed", report, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
