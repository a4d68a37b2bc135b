"""Out-of-core denoising: bounded memory on a ~2 GB tomogram, and the same numbers as in RAM.

    python benchmarks/out_of_core.py --quick   # 256×1024×2048 float32 (2 GiB), fast preset's U-Net
    python benchmarks/out_of_core.py --shape 128,1024,1024 --depth 2 --width 16 --tile 32

1. **Correctness** on a small volume (64×256×256): the input is written as MRC, read back
   memory-mapped (``napari_nmsg.io.read_volume``) and denoised into a memory-mapped MRC
   (``napari_nmsg.io.mrc_output``); the result must equal in-memory inference of the same
   array to float tolerance. Checked with a tiny U-Net and with the presets' U-Nets.
2. **Memory** on the big volume: the MRC is generated slab by slab with plain file writes
   (never held in RAM), then a fresh process memory-maps it and denoises it into a
   memory-mapped output, while a thread samples its RSS. The report gives the peak RSS (``VmHWM``,
   the kernel's high-water mark, which also counts resident pages of memory-mapped files)
   and the sampled peaks of its anonymous part (heap: what must really fit in RAM) and its
   file-backed part (page cache the kernel can reclaim at any time).

The network is random-initialised (with a random, non-zero output layer so that it is not
the identity): the point is memory and correctness, not denoising. The 2 GiB run uses a
width-8 U-Net of depth 2 (the fast preset's when it was measured; it has one level since,
which needs less memory per tile) in one pass, with mixed precision where the CPU has native
bfloat16;
``--depth 0 --width 2`` gives a minimal net for CPUs where that would take too long. The big
files go to
``--tmp`` (default: the system temporary folder) and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
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
    peak_rss_mb,
    precision_name,
    run_worker,
    write_json,
)
from _out_of_core_report import render

LIMIT_MB = 1536
MRC_HEADER_BYTES = 1024


def build_model(depth: int, width: int, tile: int, overlap: int, seed: int = 0):
    """A random U-Net wrapped as an NMSGModel; the zero-initialised head is randomised."""
    import torch

    from napari_nmsg.engine import NMSGConfig, NMSGModel
    from napari_nmsg.engine.noise_model import SpectralNoise
    from napari_nmsg.engine.unet import UNet3D
    from napari_nmsg.engine.volume import Normalisation

    multiple = 2**depth
    config = NMSGConfig.preset(
        "fast",
        unet_depth=depth,
        unet_width=width,
        crop=max(2 * multiple, 40 // multiple * multiple),
        tile=tile,
        overlap=overlap,
        device="cpu",
        seed=seed,
    )
    torch.manual_seed(seed)
    net = UNet3D(depth, width).eval()
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.2)
        net.head.bias.fill_(0.01)
    return NMSGModel(config, SpectralNoise(torch.zeros(3, 3, 3)), net, Normalisation(0, 1, 0))


def synthetic_slab(z0: int, depth: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Z-planes ``z0 … z0+depth`` of a synthetic tomogram: smooth blobs plus white noise."""
    rng = np.random.default_rng((seed, z0))
    _, ny, nx = shape
    z = np.arange(z0, z0 + depth, dtype=np.float32)[:, None, None]
    y = np.arange(ny, dtype=np.float32)[None, :, None]
    x = np.arange(nx, dtype=np.float32)[None, None, :]
    signal = np.sin(z / 9.0) * np.cos(y / 13.0) * np.sin(x / 17.0 + 1.0)
    noise = rng.standard_normal((depth, ny, nx), dtype=np.float32)
    return (100.0 + 5.0 * signal + 10.0 * noise).astype(np.float32)


def write_big_mrc(path: Path, shape: tuple[int, int, int], seed: int) -> float:
    """Write a float32 MRC slab by slab with plain writes (no memory map); return seconds."""
    import mrcfile

    t0 = time.perf_counter()
    with mrcfile.new(path, overwrite=True) as mrc:  # header only
        mrc.header.mode = 2
        mrc.header.nx, mrc.header.ny, mrc.header.nz = shape[2], shape[1], shape[0]
        mrc.header.mx, mrc.header.my, mrc.header.mz = shape[2], shape[1], shape[0]
        mrc.header.cella = (shape[2] * 10.0, shape[1] * 10.0, shape[0] * 10.0)
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean, mrc.header.rms = 0, 200, 100, 10
    plane = shape[1] * shape[2] * 4
    step = max(1, (64 << 20) // plane)
    with open(path, "r+b") as handle:
        handle.truncate(MRC_HEADER_BYTES)
        handle.seek(MRC_HEADER_BYTES)
        for z0 in range(0, shape[0], step):
            depth = min(step, shape[0] - z0)
            handle.write(synthetic_slab(z0, depth, shape, seed).tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - t0


def check_equal(tmp: Path, model, label: str) -> dict[str, Any]:
    """Memory-mapped in → memory-mapped out must equal in-memory inference."""
    from napari_nmsg.engine import iter_denoise, run_events
    from napari_nmsg.io import mrc_output, read_volume, write_mrc

    shape = (64, 256, 256)
    volume = synthetic_slab(0, shape[0], shape, seed=1)
    source = tmp / f"small-{label}.mrc"
    target = tmp / f"small-{label}-denoised.mrc"
    write_mrc(source, volume, (10.0, 10.0, 10.0))
    t0 = time.perf_counter()
    in_memory = run_events(iter_denoise(volume, model))
    memory_s = time.perf_counter() - t0
    tomo = read_volume(source)
    t0 = time.perf_counter()
    with mrc_output(target, tomo.data.shape, tomo.voxel_size, protect=(source,)) as out:
        run_events(iter_denoise(tomo.data, model, out))
    mapped_s = time.perf_counter() - t0
    reread = np.asarray(read_volume(target).data)
    diff = np.abs(reread.astype(np.float64) - in_memory)
    scale = float(np.abs(in_memory).max())
    changed = float(np.abs(in_memory - volume).mean() / volume.std())
    result = {
        "net": label,
        "shape": list(shape),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / scale),
        "equal": bool(np.allclose(reread, in_memory, rtol=1e-5, atol=1e-5 * scale)),
        "output_vs_input_change": changed,
        "in_memory_s": memory_s,
        "out_of_core_s": mapped_s,
    }
    for path in (source, target):
        path.unlink(missing_ok=True)
    return result


def worker(spec_path: str) -> int:
    """Fresh process: memory-map the big MRC and denoise it into a memory-mapped MRC."""
    spec = json.loads(Path(spec_path).read_text())
    result: dict[str, Any] = {"ok": False}
    try:
        from napari_nmsg.engine import Progress, iter_denoise, run_events
        from napari_nmsg.io import mrc_output, read_volume

        model = build_model(spec["depth"], spec["width"], spec["tile"], spec["overlap"])
        result["precision"] = precision_name(model.config)
        result["baseline_rss_mb"] = peak_rss_mb()
        tomo = read_volume(spec["input"])
        first: list[float] = []
        t0 = time.perf_counter()
        last_print = [0.0]

        def on_event(event) -> None:
            if isinstance(event, Progress):
                now = time.perf_counter() - t0
                if not first:
                    first.append(now)
                if now - last_print[0] > 30 or event.step == event.total:
                    last_print[0] = now
                    print(f"    denoise {event.step}/{event.total} tiles ({now:.0f}s)", flush=True)

        with RssSampler(0.05) as rss:
            with mrc_output(
                spec["output"], tomo.data.shape, tomo.voxel_size, protect=(spec["input"],)
            ) as out:
                run_events(iter_denoise(tomo.data, model, out), on_event)
        seconds = time.perf_counter() - t0
        result.update(
            {
                "ok": True,
                "seconds": seconds,
                "to_first_tile_s": first[0] if first else None,
                "mvox_per_s": float(np.prod(tomo.data.shape)) / seconds / 1e6,
                "peak_rss_mb": peak_rss_mb(),
                "peak_anon_mb": rss.peaks["anon"],
                "peak_file_mb": rss.peaks["file"],
                "peak_sampled_rss_mb": rss.peaks["rss"],
            }
        )
        # spot checks: finite, changed, plausible statistics, on a few output planes
        from napari_nmsg.io import read_volume as reread

        data = reread(spec["output"]).data
        planes = [0, data.shape[0] // 2, data.shape[0] - 1]
        sample = np.stack([np.asarray(data[z]) for z in planes])
        source = np.stack([np.asarray(tomo.data[z]) for z in planes])
        result["output_finite"] = bool(np.isfinite(sample).all())
        result["output_mean_std"] = [float(sample.mean()), float(sample.std())]
        result["input_mean_std"] = [float(source.mean()), float(source.std())]
    except Exception as exc:
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["peak_rss_mb"] = peak_rss_mb()
    write_json(Path(spec["result"]), result)
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the default settings")
    p.add_argument("--shape", default="256,1024,2048", help="Z,Y,X of the big volume")
    p.add_argument(
        "--depth", type=int, default=2, help="U-Net depth of the big run (fast preset: 2)"
    )
    p.add_argument("--width", type=int, default=8, help="U-Net width of the big run (fast: 8)")
    p.add_argument("--tile", type=int, default=64, help="inference tile (engine default 64)")
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true", help="keep the big files")
    p.add_argument("--skip-small", action="store_true")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        return worker(args._worker)

    start = time.perf_counter()
    shape = tuple(int(v) for v in args.shape.split(","))
    size_gb = np.prod(shape) * 4 / 2**30
    report: dict[str, Any] = {
        "machine": machine_info(),
        "shape": list(shape),
        "size_gib": round(float(size_gb), 3),
        "net": {"depth": args.depth, "width": args.width},
        "tile": args.tile,
        "overlap": args.overlap,
        "limit_mb": LIMIT_MB,
    }
    work = Path(tempfile.mkdtemp(prefix="nmsg-ooc-", dir=args.tmp))
    free_gb = shutil.disk_usage(work).free / 2**30
    report["disk_free_gib_at_start"] = round(free_gb, 1)
    log(f"work folder {work}: {free_gb:.0f} GiB free, need {2.1 * size_gb:.1f} GiB", start)

    def save() -> None:
        report["end_load_avg"] = [round(v, 2) for v in os.getloadavg()]
        report["elapsed_s"] = time.perf_counter() - start
        write_json(args.out / "out_of_core.json", report)
        (args.out / "out_of_core.md").write_text(render(report))

    try:
        if not args.skip_small:
            report["equality"] = []
            for label, depth, width in (
                ("tiny (depth 1, width 4)", 1, 4),
                ("fast preset's U-Net (depth 2, width 8)", 2, 8),
                ("balanced / quality presets' U-Net (depth 2, width 16)", 2, 16),
            ):
                log(f"equality check, {label} U-Net", start)
                model = build_model(depth, width, args.tile, args.overlap)
                row = check_equal(work, model, label.split()[0])
                row["net"] = label
                report["equality"].append(row)
                log(
                    f"  max |out-of-core − in-memory| = {row['max_abs_diff']:.3g} "
                    f"(equal: {row['equal']})",
                    start,
                )
                save()
        if free_gb < 2.2 * size_gb:
            report["big"] = {"ok": False, "error": f"only {free_gb:.1f} GiB free disk space"}
            save()
            return 1
        source, target = work / "big.mrc", work / "big-denoised.mrc"
        log(f"writing {source.name}: {shape}, {size_gb:.2f} GiB, slab by slab", start)
        write_s = write_big_mrc(source, shape, seed=0)
        report["write_s"] = write_s
        log(f"  written in {write_s:.0f}s; denoising it in a fresh process", start)
        spec = {
            "input": str(source),
            "output": str(target),
            "result": str(work / "big.result.json"),
            "depth": args.depth,
            "width": args.width,
            "tile": args.tile,
            "overlap": args.overlap,
        }
        spec_path = work / "big.spec.json"
        write_json(spec_path, spec)
        rc, tail = run_worker(Path(__file__).resolve(), spec_path, print)
        try:
            big = json.loads(Path(spec["result"]).read_text())
        except OSError:
            big = {"ok": False, "error": f"worker exited with {rc}: {' | '.join(tail[-3:])}"}
        report["big"] = big
        if big.get("ok"):
            log(
                f"  {big['seconds']:.0f}s, {big['mvox_per_s']:.2f} Mvox/s; peak RSS "
                f"{big['peak_rss_mb']:.0f} MB, peak anon {big['peak_anon_mb']:.0f} MB, "
                f"peak file-backed {big['peak_file_mb']:.0f} MB",
                start,
            )
        else:
            log(f"  FAILED: {big.get('error')}", start)
    finally:
        if args.keep:
            log(f"kept {work}", start)
        else:
            shutil.rmtree(work, ignore_errors=True)
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
