"""Speed benchmark: training steps/s and inference Mvox/s per preset, tiling and threads.

    python benchmarks/speed.py --quick     # 64×128×128 volume, a few timed steps (~5 min)
    python benchmarks/speed.py --full      # 128×256×256 volume, more steps

Writes ``speed.md`` and ``speed.json`` to ``--out``. Everything runs in one process, one
measurement after the other, on the same simulated volume; step times are medians over the
timed steps after a warm-up. On a shared machine the absolute numbers move with the load
(it is recorded); ratios measured within one run are the steadier figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    RssSampler,
    fmt,
    log,
    machine_info,
    machine_markdown,
    markdown_table,
    precision_name,
    write_json,
)

MODES = {
    "quick": {"shape": (64, 128, 128), "steps": 3, "warmup": 1, "gan_steps": 3, "amp_steps": 300},
    "full": {
        "shape": (128, 256, 256),
        "steps": 10,
        "warmup": 2,
        "gan_steps": 10,
        "amp_steps": 800,
    },
}
TILES = (32, 48, 64, 96)
OVERLAPS = (8, 16)
BATCHES = (1, 2, 4, 8)
THREADS = (1, 2)
AMP_TILES = ((64, 16), (128, 16))
PAIRS = (0, 1, 2, 4)  # recorrupted ±z pairs averaged at inference (fast U-Net, default tiles)


def timed_training(volume, config, noise, warmup: int) -> dict[str, Any]:
    """Fit with ``config`` and time the training steps from the engine's progress events."""
    from napari_nmsg.engine import Progress, iter_fit_denoiser, run_events

    stamps: list[float] = []
    load = os.getloadavg()[0]
    t0 = time.perf_counter()

    def on_event(event) -> None:
        if isinstance(event, Progress) and event.stage == "train":
            stamps.append(time.perf_counter())

    model = run_events(iter_fit_denoiser(volume, config, noise), on_event)
    total = time.perf_counter() - t0
    intervals = np.diff(stamps)[max(0, warmup - 1) :]
    step = float(np.median(intervals)) if len(intervals) else float("nan")
    crop_voxels = config.batch_size * config.crop**3
    return {
        "model": model,
        "setup_s": stamps[0] - t0 if stamps else float("nan"),
        "step_s": step,
        "steps_per_s": 1 / step,
        "train_mvox_per_s": crop_voxels / step / 1e6,
        "timed_steps": len(intervals),
        "total_s": total,
        "load_1min_at_start": load,
    }


def timed_inference(volume, model, target=None, **changes) -> dict[str, Any]:
    """Denoise the whole volume with inference settings ``changes``; Mvox/s and memory.

    With the noiseless ``target`` the output's PSNR is reported too.
    """
    from napari_nmsg.engine import iter_denoise, run_events
    from napari_nmsg.engine.tiling import tile_sizes, tile_starts
    from napari_nmsg.metrics import psnr

    config = model.config.replace(**changes)
    shape = volume.shape
    sizes = tile_sizes(shape, config.tile, model.denoiser.multiple)
    tiles = int(
        np.prod(
            [
                len(tile_starts(n, t, min(config.overlap, t // 2)))
                for n, t in zip(shape, sizes, strict=True)
            ]
        )
    )
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    run_events(iter_denoise(volume, model, config=config))  # cold: first use of these shapes
    cold = time.perf_counter() - t0
    with RssSampler(0.02) as rss:
        start_anon = rss.peaks["anon"]
        t0 = time.perf_counter()
        output = run_events(iter_denoise(volume, model, config=config))
        seconds = time.perf_counter() - t0
    return {
        "amp": config.amp,
        "precision": precision_name(config),
        "inference_pairs": config.inference_pairs,
        "psnr": None if target is None else psnr(output, target),
        "tile": config.tile,
        "overlap": config.overlap,
        "tile_batch": config.tile_batch,
        "tiles": tiles,
        "processed_voxel_factor": tiles * int(np.prod(sizes)) / volume.size,
        "seconds": seconds,
        "cold_seconds": cold,
        "mvox_per_s": volume.size / seconds / 1e6,
        "peak_anon_mb": rss.peaks["anon"],
        "anon_at_start_mb": start_anon,
        "load_1min_at_start": load,
    }


def timed_gan(volume, config) -> dict[str, Any]:
    from napari_nmsg.engine import Progress, iter_learn_noise, run_events

    stamps: list[tuple[int, float]] = []
    t0 = time.perf_counter()

    def on_event(event) -> None:
        if isinstance(event, Progress) and event.stage == "noise-model":
            stamps.append((event.step, time.perf_counter()))

    run_events(iter_learn_noise(volume, config), on_event)
    total = time.perf_counter() - t0
    check_every = max(1, config.gan_steps // 5)
    times = [t for _, t in stamps]
    intervals = list(zip([s for s, _ in stamps][1:], np.diff(times), strict=True))
    clean = [dt for step, dt in intervals if step % check_every != 0 and step != config.gan_steps]
    return {
        "gan_steps": config.gan_steps,
        "total_s": total,
        "first_step_s": times[0] - t0 if times else float("nan"),
        "mean_step_s": float(np.mean(np.diff(times))) if len(times) > 1 else float("nan"),
        "step_s_without_snapshot": float(statistics.median(clean)) if clean else None,
        "snapshot_every": check_every,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small volume, few steps (default)")
    mode.add_argument("--full", action="store_true", help="bigger volume, more steps")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sections", default="presets,gan,amp,tiles,batch,threads")
    args = p.parse_args(argv)

    import torch

    from napari_nmsg.engine import NMSGConfig, iter_learn_noise, run_events
    from napari_nmsg.simulate import simulate_tomogram

    mode = "full" if args.full else "quick"
    settings = MODES[mode]
    sections = set(args.sections.split(","))
    start = time.perf_counter()
    info = machine_info()
    report: dict[str, Any] = {"mode": mode, "settings": settings, "machine": info}
    shape = settings["shape"]
    log(f"simulating {shape}", start)
    sim = simulate_tomogram(shape, snr=0.1, seed=0)
    volume = sim.noisy
    mvox = volume.size / 1e6
    steps, warmup = settings["steps"], settings["warmup"]
    base = NMSGConfig.preset("fast", device=args.device, noise_model="spectral")
    noise = run_events(iter_learn_noise(volume, base))
    default_threads = torch.get_num_threads()

    def save() -> None:
        report["end_load_avg"] = [round(v, 2) for v in os.getloadavg()]
        report["elapsed_s"] = time.perf_counter() - start
        write_json(args.out / "speed.json", report)
        (args.out / "speed.md").write_text(render(report, mvox))

    models = {}
    if sections & {"presets", "tiles", "batch", "threads"}:
        report["presets"] = {}
        names = ("fast", "balanced", "quality") if "presets" in sections else ("fast",)
        for name in names:
            config = NMSGConfig.preset(
                name, device=args.device, noise_model="spectral", train_steps=steps + warmup
            )
            log(f"preset {name}: {steps + warmup} training steps", start)
            train = timed_training(volume, config, noise, warmup)
            models[name] = train.pop("model")
            infer = timed_inference(volume, models[name])
            report["presets"][name] = {
                "unet": f"depth {config.unet_depth}, width {config.unet_width}",
                "crop": config.crop,
                "batch": config.batch_size,
                "preset_train_steps": NMSGConfig.preset(name).train_steps,
                **train,
                "inference": infer,
            }
            log(
                f"preset {name}: {train['step_s']:.2f} s/step, "
                f"inference {infer['mvox_per_s']:.3f} Mvox/s",
                start,
            )
            save()

    if "gan" in sections:
        config = NMSGConfig.preset(
            "fast", device=args.device, noise_model="gan", gan_steps=settings["gan_steps"]
        )
        log(f"GAN noise model: {config.gan_steps} steps", start)
        report["gan"] = timed_gan(volume, config)
        report["gan"]["preset_gan_steps"] = {
            n: NMSGConfig.preset(n).gan_steps for n in ("fast", "balanced", "quality")
        }
        log(f"GAN: {report['gan']['mean_step_s']:.1f} s/step", start)
        save()

    if "amp" in sections:
        config = NMSGConfig.preset(
            "fast", device=args.device, noise_model="spectral", train_steps=settings["amp_steps"]
        )
        log(f"mixed precision: training the fast U-Net for {config.train_steps} steps", start)
        trained = timed_training(volume, config, noise, warmup)["model"]
        report["amp"] = []
        for tile, overlap in AMP_TILES:
            for amp in (False, True):
                row = timed_inference(
                    volume, trained, sim.target, tile=tile, overlap=overlap, amp=amp,
                    inference_pairs=0,
                )  # fmt: skip
                report["amp"].append(row)
                log(
                    f"tile {tile}/{overlap} amp {amp}: {row['mvox_per_s']:.3f} Mvox/s, "
                    f"PSNR {row['psnr']:.3f} dB",
                    start,
                )
        report["pairs"] = []
        for pairs in PAIRS:
            row = timed_inference(volume, trained, sim.target, inference_pairs=pairs)
            report["pairs"].append(row)
            log(
                f"{pairs} inference pairs: {row['mvox_per_s']:.3f} Mvox/s, "
                f"PSNR {row['psnr']:.3f} dB",
                start,
            )
        save()

    fast = models.get("fast")
    if "tiles" in sections and fast is not None:
        report["tiles"] = []
        for tile in TILES:
            for overlap in OVERLAPS:
                row = timed_inference(volume, fast, tile=tile, overlap=overlap)
                report["tiles"].append(row)
                log(f"tile {tile} overlap {overlap}: {row['mvox_per_s']:.3f} Mvox/s", start)
        save()

    if "batch" in sections and fast is not None:
        report["batch"] = []
        for batch in BATCHES:
            row = timed_inference(volume, fast, tile=48, overlap=16, tile_batch=batch)
            report["batch"].append(row)
            log(f"tile batch {batch}: {row['mvox_per_s']:.3f} Mvox/s", start)
        save()

    if "threads" in sections and fast is not None:
        report["threads"] = []
        config = fast.config.replace(train_steps=steps + warmup)
        for threads in [t for _ in range(2) for t in THREADS]:  # interleaved, twice
            torch.set_num_threads(threads)
            try:
                train = timed_training(volume, config, noise, warmup)
                train.pop("model")
                infer = timed_inference(volume, fast)
            finally:
                torch.set_num_threads(default_threads)
            report["threads"].append({"threads": threads, **train, "inference": infer})
            log(
                f"{threads} thread(s): {train['step_s']:.2f} s/step, "
                f"{infer['mvox_per_s']:.3f} Mvox/s",
                start,
            )
        save()
    save()
    log(f"done; wrote {args.out / 'speed.md'}", start)
    return 0


def render(report: dict[str, Any], mvox: float) -> str:
    s = report["settings"]
    lines = [
        "# NMSG speed benchmark",
        "",
        f"Mode `{report['mode']}`: simulated volume {'×'.join(map(str, s['shape']))} "
        f"({mvox:.2f} Mvox), {s['steps']} timed training steps after {s['warmup']} warm-up "
        f"(median step time); device cpu. Total {report['elapsed_s'] / 60:.1f} min.",
        "",
        machine_markdown(report["machine"], report.get("end_load_avg")),
    ]
    if report.get("presets"):
        lines += ["", "## Presets: training and inference", ""]
        rows = []
        for name, r in report["presets"].items():
            inf = r["inference"]
            est = r["step_s"] * r["preset_train_steps"] / 60
            rows.append(
                [
                    name,
                    r["unet"],
                    f"{r['batch']} × {r['crop']}³",
                    fmt(r["step_s"]),
                    fmt(r["steps_per_s"], 3),
                    fmt(r["train_mvox_per_s"], 3),
                    f"{r['preset_train_steps']} steps ≈ {est:.0f} min",
                    fmt(r["setup_s"], 1),
                    fmt(inf["mvox_per_s"], 3),
                    f"{inf['inference_pairs']} ({inf['precision']})",
                    f"{inf['tile']} / {inf['overlap']} / {inf['tile_batch']}",
                    f"{inf['peak_anon_mb']:.0f}",
                    fmt(r["load_1min_at_start"], 1),
                ]
            )
        lines.append(
            markdown_table(
                [
                    "preset",
                    "U-Net",
                    "batch × crop",
                    "s / step",
                    "steps / s",
                    "train Mvox/s",
                    "preset budget (est. on this machine)",
                    "setup s",
                    "inference Mvox/s",
                    "± pairs (precision)",
                    "tile / overlap / batch",
                    "peak anon RSS MB",
                    "load",
                ],
                rows,
            )
        )
        lines += [
            "",
            "`setup s`: from the start of the fit to the first training step (local noise "
            "amplitude map etc.). `train Mvox/s`: crop voxels through forward + backward per "
            "second. Inference runs each preset's defaults: `± pairs` recorrupted pairs "
            "averaged (2 network passes each; 0 = one pass f(y)) and automatic mixed "
            "precision. Inference Mvox/s counts each input voxel once (overlapping tiles process "
            "more); each setting runs twice and the second (warm) run is timed: the first use "
            "of new tensor shapes pays a one-off set-up (`cold s` in the tables below). Peak "
            "anon RSS: sampled every 20 ms during the warm run, whole process (includes torch "
            "and the volume; the allocator may keep memory from earlier runs). `load`: the "
            "1-minute load average when the measurement started (2 cores: above ~2 the "
            "machine was shared and that row is slower than the machine can do).",
        ]
    if report.get("amp"):
        rows = [
            [
                r["tile"],
                r["overlap"],
                r["precision"],
                fmt(r["cold_seconds"], 1),
                fmt(r["seconds"], 2),
                fmt(r["mvox_per_s"], 3),
                fmt(r["psnr"], 3),
                fmt(r["load_1min_at_start"], 1),
            ]
            for r in report["amp"]
        ]
        lines += [
            "",
            "## Mixed-precision inference (`amp`, fast U-Net trained "
            f"{s.get('amp_steps', '?')} steps, one pass f(y))",
            "",
            markdown_table(
                ["tile", "overlap", "precision", "cold s", "s", "Mvox/s", "PSNR dB", "load"],
                rows,
            ),
            "",
            "PSNR of the denoised volume against the simulation's noiseless target: mixed "
            "precision rounds only the predicted correction (it is added to the float32 "
            "input). The speed-up needs native bfloat16 in the CPU (AMX or AVX512-BF16); "
            "without it autocast may be slower, which is why the default (`amp` auto) turns "
            "it on only for CUDA and for CPUs with native bfloat16.",
        ]
    if report.get("pairs"):
        rows = [
            [
                r["inference_pairs"],
                2 * r["inference_pairs"] or 1,
                r["precision"],
                fmt(r["seconds"], 2),
                fmt(r["mvox_per_s"], 3),
                fmt(r["psnr"], 3),
                fmt(r["load_1min_at_start"], 1),
            ]
            for r in report["pairs"]
        ]
        lines += [
            "",
            "## Averaged recorrupted pairs at inference (same network, default tiles)",
            "",
            markdown_table(
                ["± pairs", "passes", "precision", "s", "Mvox/s", "PSNR dB", "load"], rows
            ),
            "",
            "The network was trained on y + αz; the mean of f(y + αz) and f(y − αz) over fresh "
            "z (pair k under the k-th in-plane symmetry) estimates the denoised volume better "
            "than one pass f(y), at 2 passes per pair. Each preset's count: `± pairs` in the "
            "presets table.",
        ]
    if report.get("gan"):
        g = report["gan"]
        clean = g["step_s_without_snapshot"]
        lines += [
            "",
            "## GAN noise model",
            "",
            f"{g['gan_steps']} WGAN-GP steps (5 critic steps + 1 generator step each) took "
            f"{g['total_s']:.1f} s including patch extraction: {g['mean_step_s']:.2f} s per "
            "step on average, with a held-out fidelity snapshot every "
            f"{g['snapshot_every']} step(s)"
            + (f"; {clean:.2f} s per step without a snapshot" if clean else "")
            + ". At that rate the presets' GAN budgets ("
            + ", ".join(f"{k} {v}" for k, v in g["preset_gan_steps"].items())
            + " steps) take about "
            + ", ".join(
                f"{v * (clean or g['mean_step_s']) / 60:.0f} min"
                for v in g["preset_gan_steps"].values()
            )
            + ".",
        ]
    if report.get("tiles"):
        lines += ["", "## Inference: tile size × overlap (fast preset U-Net, tile batch 2)", ""]
        rows = [
            [
                r["tile"],
                r["overlap"],
                r["tiles"],
                fmt(r["processed_voxel_factor"]),
                fmt(r["cold_seconds"], 1),
                fmt(r["seconds"], 1),
                fmt(r["mvox_per_s"], 3),
                f"{r['peak_anon_mb']:.0f}",
                fmt(r["load_1min_at_start"], 1),
            ]
            for r in report["tiles"]
        ]
        lines.append(
            markdown_table(
                [
                    "tile",
                    "overlap",
                    "tiles",
                    "voxels processed / volume",
                    "cold s",
                    "s",
                    "Mvox/s",
                    "peak anon RSS MB",
                    "load",
                ],
                rows,
            )
        )
    if report.get("batch"):
        lines += ["", "## Inference: tile batch (tile 48, overlap 16)", ""]
        rows = [
            [
                r["tile_batch"],
                fmt(r["cold_seconds"], 1),
                fmt(r["seconds"], 1),
                fmt(r["mvox_per_s"], 3),
                f"{r['peak_anon_mb']:.0f}",
                fmt(r["load_1min_at_start"], 1),
            ]
            for r in report["batch"]
        ]
        lines.append(
            markdown_table(
                ["tile batch", "cold s", "s", "Mvox/s", "peak anon RSS MB", "load"], rows
            )
        )
    if report.get("threads"):
        lines += ["", "## torch CPU threads (fast preset)", ""]
        rows = [
            [
                r["threads"],
                fmt(r["step_s"]),
                fmt(r["steps_per_s"], 3),
                fmt(r["inference"]["mvox_per_s"], 3),
                fmt(r["load_1min_at_start"], 1),
            ]
            for r in report["threads"]
        ]
        lines.append(
            markdown_table(["threads", "s / step", "steps / s", "inference Mvox/s", "load"], rows)
        )
        lines += [
            "",
            "Interleaved 1, 2, 1, 2 so that a change of load hits both settings. On cores "
            "shared with other busy processes, two torch threads can be much slower than one "
            "(threads wait for each other at every parallel region); on an idle machine two "
            "are faster.",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
