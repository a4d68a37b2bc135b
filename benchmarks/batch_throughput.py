"""Throughput of ``denoise_many`` with 1 vs 2 local workers, and peak memory per worker.

Simulates N tomograms (default 4 × 64³), denoises them with the fast preset (fewer steps by
default so the run stays short on a small CPU machine) once per worker count, each into a
fresh folder, and reports wall time (cluster start included), throughput, the ratio to the
first worker count, per-task timings, and each worker process's peak RSS as measured by the
task itself (``getrusage(RUSAGE_SELF).ru_maxrss``) plus its anonymous / file-backed RSS at the
end of its last task. Numbers are ratios measured in one run on one machine: on shared or
busy machines they move with the other load, so say which machine gave them.

    python benchmarks/batch_throughput.py --workers 1,2 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from napari_nmsg import __version__
from napari_nmsg.batch import denoise_many
from napari_nmsg.engine import NMSGConfig
from napari_nmsg.io import write_mrc
from napari_nmsg.simulate import simulate_tomogram

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import Column, render_table

COLUMNS = [
    Column("workers", lambda r: r["workers"]),
    Column("torch threads", lambda r: r["torch_threads"]),
    Column("wall (s)", lambda r: r["wall_s"], ".1f"),
    Column("tomo/min", lambda r: r["tomograms_per_min"], ".2f"),
    Column("ratio", lambda r: r["throughput_ratio"], ".2f"),
    Column("mean task (s)", lambda r: r["mean_task_s"]["total"], ".1f"),
    Column(
        "peak RSS/worker (MB)",
        lambda r: ", ".join(f"{w['peak_rss_mb']:.0f}" for w in r["per_worker"].values()),
    ),
]


def simulate_inputs(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(n):
        sim = simulate_tomogram((size,) * 3, snr=0.1, seed=seed)
        paths.append(write_mrc(folder / f"sim{seed}.mrc", sim.noisy, (sim.voxel_size,) * 3))
    return paths


def measure(inputs: list[Path], outdir: Path, config: NMSGConfig, workers: int) -> dict:
    started = time.perf_counter()
    summary = denoise_many(inputs, outdir, config=config, n_workers=workers, quiet=True)
    wall = time.perf_counter() - started
    assert not summary.failed, [(i.input, i.error) for i in summary.failed]
    per_worker: dict[str, dict] = {}
    for item in summary.items:
        facts = per_worker.setdefault(item.worker, {"tasks": 0, "peak_rss_mb": 0.0})
        facts["tasks"] += 1
        facts["peak_rss_mb"] = max(facts["peak_rss_mb"], item.peak_rss_mb)
        facts["rss_anon_mb_end"] = item.rss_anon_mb
        facts["rss_file_mb_end"] = item.rss_file_mb
    mean = {
        key: statistics.mean(i.seconds.get(key, 0.0) for i in summary.items)
        for key in ("total", "fit", "denoise")
    }
    return {
        "workers": workers,
        "torch_threads": summary.items[0].torch_threads,
        "wall_s": wall,
        "tomograms_per_min": 60 * len(inputs) / wall,
        "mean_task_s": mean,
        "per_worker": per_worker,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="tomograms (default 4)")
    parser.add_argument("--size", type=int, default=64, help="edge length (default 64)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--steps", type=int, default=20, help="training steps (fast: 300)")
    parser.add_argument("--gan-steps", type=int, default=3, help="GAN steps (fast: 150)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    config = NMSGConfig.preset(
        "fast", train_steps=args.steps, gan_steps=args.gan_steps, device=args.device
    )
    load_at_start = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="nmsg-bench-") as tmp:
        inputs = simulate_inputs(Path(tmp) / "in", args.n, args.size)
        for k, workers in enumerate(int(w) for w in args.workers.split(",")):
            runs.append(measure(inputs, Path(tmp) / f"out{k}", config, workers))
    base = runs[0]["tomograms_per_min"]
    for run in runs:
        run["throughput_ratio"] = run["tomograms_per_min"] / base
    result = {
        "package_version": __version__,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "load_avg_at_start": load_at_start,
            "load_avg_at_end": os.getloadavg(),
            "platform": platform.platform(),
        },
        "settings": {
            "n": args.n,
            "size": args.size,
            "steps": args.steps,
            "gan_steps": args.gan_steps,
            "device": args.device,
        },
        "runs": runs,
    }
    print(f"{args.n} × {args.size}³, fast preset, {args.steps} train / {args.gan_steps} GAN "
          f"steps, {result['machine']['cpus']} CPUs, load {load_at_start[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print(render_table(runs, COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
