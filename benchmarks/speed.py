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
    log,
    machine_info,
    precision_name,
    write_json,
)
from _speed_report import render

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
    from napari_nmsg.engine import iter_denoise, resolve_device, run_events
    from napari_nmsg.engine.device import tile_batch_for
    from napari_nmsg.engine.tiling import tile_grid
    from napari_nmsg.metrics import psnr

    config = model.config.replace(**changes)
    shape = volume.shape
    grid = tile_grid(shape, config.tile, config.overlap, model.denoiser.multiple)
    tiles = int(np.prod([len(axis.starts) for axis in grid]))
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
        "tile_batch": tile_batch_for(resolve_device(config.device), config.tile_batch),
        "tiles": tiles,
        "processed_voxel_factor": tiles * int(np.prod([axis.size for axis in grid])) / volume.size,
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


if __name__ == "__main__":
    raise SystemExit(main())
