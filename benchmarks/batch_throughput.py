"""``nmsg batch`` against the same tomograms denoised one by one with ``nmsg denoise``.

Side by side in one run on one machine, as a user would run them: N simulated tomograms
(default 2 × 64³) are denoised by N ``nmsg denoise`` commands in a row, then by one
``nmsg batch`` of all N (local Dask cluster, default workers), once per settings variant
(default: the fast preset, and the fast preset with ``--steps 600``). Each command is timed
from its start to its exit, Python start-up and imports included. The batch's per-task
timings (fit, denoise) come from its summary.json; its overhead is its wall time minus the
time its tasks took, per worker. Target: batch ≤ 1.1 × the singles' sum.

    python benchmarks/batch_throughput.py    # writes benchmarks/results/batch_throughput.*
    python benchmarks/batch_throughput.py --render benchmarks/results/batch_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from napari_nmsg import __version__
from napari_nmsg.io import write_mrc
from napari_nmsg.simulate import simulate_tomogram

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, machine_info, machine_markdown, save_figure
from _table import Column, render_table

TARGET_RATIO = 1.1
COLUMNS = [
    Column("settings", lambda r: r["label"]),
    Column("singles, sum (s)", lambda r: sum(r["single_s"]), ".1f"),
    Column("each (s)", lambda r: ", ".join(f"{s:.1f}" for s in r["single_s"])),
    Column("batch (s)", lambda r: r["batch_s"], ".1f"),
    Column("batch / singles", lambda r: r["ratio"], ".2f"),
    Column("workers × threads", lambda r: f"{r['workers']} × {r['torch_threads']}"),
    Column("batch fit, mean (s)", lambda r: r["batch_fit_mean_s"], ".1f"),
    Column("batch overhead (s)", lambda r: r["batch_overhead_s"], ".1f"),
    Column("peak RSS/worker (MB)", lambda r: f"{r['peak_rss_mb']:.0f}"),
]


def simulate_inputs(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(n):
        sim = simulate_tomogram((size,) * 3, snr=0.1, seed=seed)
        paths.append(write_mrc(folder / f"sim{seed}.mrc", sim.noisy, (sim.voxel_size,) * 3))
    return paths


def nmsg_command() -> str:
    """The ``nmsg`` installed beside this Python (its environment need not be activated)."""
    beside = Path(sys.executable).parent / "nmsg"
    return str(beside) if beside.is_file() else shutil.which("nmsg") or "nmsg"


def timed(command: list[str]) -> float:
    """Wall seconds of one command, run alone; its output is kept only if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def measure(inputs: list[Path], outdir: Path, label: str, options: list[str]) -> dict:
    nmsg = [nmsg_command()]
    singles = [
        timed([*nmsg, "denoise", str(path), "-o", str(outdir / f"single-{path.name}"),
               *options, "-q"])
        for path in inputs
    ]  # fmt: skip
    batch_out = outdir / "batch"
    batch_s = timed([*nmsg, "batch", *map(str, inputs), "-o", str(batch_out), *options, "-q"])
    items = json.loads((batch_out / "summary.json").read_text())["items"]
    assert all(item["status"] == "done" for item in items), items
    workers = {item["worker"] for item in items}
    busiest = max(sum(i["seconds"]["total"] for i in items if i["worker"] == w) for w in workers)
    return {
        "label": label,
        "options": options,
        "single_s": singles,
        "batch_s": batch_s,
        "ratio": batch_s / sum(singles),
        "workers": len(workers),
        "torch_threads": items[0]["torch_threads"],
        "batch_task_s": [item["seconds"] for item in items],
        "batch_fit_mean_s": sum(i["seconds"]["fit"] for i in items) / len(items),
        "batch_overhead_s": batch_s - busiest,
        "peak_rss_mb": max(item["peak_rss_mb"] for item in items),
    }


def variants(text: str) -> list[tuple[str, list[str]]]:
    """'default;--steps 600' -> [('default', []), ('--steps 600', ['--steps', '600'])]."""
    chosen = []
    for label in (part.strip() for part in text.split(";")):
        chosen.append((label, [] if label == "default" else shlex.split(label)))
    return chosen


def render(result: dict) -> str:
    """The Markdown report, from the JSON alone."""
    settings, machine = result["settings"], result["machine"]
    return (
        f"{settings['n']} × {settings['size']}³ simulated tomograms: `nmsg denoise` one after "
        f"another vs one `nmsg batch` of all (default local cluster), target batch / singles "
        f"≤ {result['target_ratio']}.\n\n"
        f"{machine_markdown(machine, machine['load_avg_at_end'])}\n\n"
        f"{render_table(result['runs'], COLUMNS)}\n\n"
        f"Made by `{result['command']}`.\n"
    )


def plot(result: dict, path: Path) -> None:
    """Wall time of the singles (stacked, one after another) beside the batch's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.9 * len(runs)))
    for row, run in enumerate(runs):
        left = 0.0
        for k, seconds in enumerate(run["single_s"]):
            ax.barh(row + 0.2, seconds, 0.35, left=left, color="#9bb7d4", edgecolor="white",
                    label="nmsg denoise, one after another" if row == k == 0 else None)  # fmt: skip
            left += seconds
        ax.barh(row - 0.2, run["batch_s"], 0.35, color="#2f6b9a",
                label="nmsg batch" if row == 0 else None)  # fmt: skip
        ax.text(run["batch_s"], row - 0.2, f" {run['ratio']:.2f}×", va="center", fontsize=8)
    ax.set_yticks(range(len(runs)), [r["label"] for r in runs])
    ax.set_xlabel(f"wall seconds for {result['settings']['n']} tomograms")
    ax.set_title(result["machine"]["cpu_model"] + f", {result['machine']['cpu_cores']} cores")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2, help="tomograms (default 2)")
    parser.add_argument("--size", type=int, default=64, help="edge length (default 64)")
    parser.add_argument(
        "--variants",
        default="--steps 600;default",
        help="';'-separated nmsg options, 'default' for none (default: '--steps 600;default')",
    )
    parser.add_argument("--out", default="benchmarks/results", help="report folder")
    parser.add_argument("--render", metavar="JSON", help="only re-render a saved report")
    args = parser.parse_args()
    out = Path(args.out)
    if args.render:
        result = json.loads(Path(args.render).read_text())
    else:
        machine = machine_info()
        runs = []
        with tempfile.TemporaryDirectory(prefix="nmsg-bench-") as tmp:
            inputs = simulate_inputs(Path(tmp) / "in", args.n, args.size)
            for k, (label, options) in enumerate(variants(args.variants)):
                outdir = Path(tmp) / f"out{k}"
                outdir.mkdir()
                runs.append(measure(inputs, outdir, label, options))
                print(render_table(runs[-1:], COLUMNS), flush=True)
        machine["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
        result = {
            "package_version": __version__,
            "command": command_line(__file__, None),
            "machine": machine,
            "settings": {"n": args.n, "size": args.size, "variants": args.variants},
            "target_ratio": TARGET_RATIO,
            "runs": runs,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "batch_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    report = render(result)
    print(report)
    (out / "batch_throughput.md").write_text(report)
    plot(result, out / "batch_throughput.png")


if __name__ == "__main__":
    main()
