"""GPU benchmark: what the presets cost on a CUDA machine, where the time goes, and which
inference settings (mixed precision, channels-last, cuDNN autotuning, torch.compile) help.

    python benchmarks/gpu.py --out DIR                          # every section
    python benchmarks/gpu.py --sections smoke,kernels,train --out DIR
    python benchmarks/gpu.py --sections suite --presets quality,balanced --cases tilt45 --out DIR
    python benchmarks/gpu.py --render DIR                       # gpu.md, gpu.png from gpu.json

Sections, each written to ``gpu.json`` as it finishes (a run cut short keeps what it did):

- ``smoke``: the whole pipeline on a 48³ volume on the GPU (spectral and GAN noise models,
  previews, the quality network, a saved model reloaded, MRC to MRC), each step's error
  kept, and whether each fit fell back to its Gaussian.
- ``kernels``: the fast and quality U-Nets on a batch of tiles already on the GPU: Mvox/s in
  float32, TF32, float16 and bfloat16 autocast, contiguous and channels-last, with cuDNN's
  autotuning, and compiled; the error of each against float32, relative to the correction.
- ``train``: training step time of each preset's network on real pairs, TF32 on and off,
  and the time of drawing a batch of pairs (crops on the CPU, noise on the GPU).
- ``suite``: the presets (``--presets``, default fast then quality) on the suite's cases
  (``suite.py``; ``--cases``) as ``nmsg denoise`` runs them: learn / train / judge /
  denoise seconds and PSNR.
- ``big``: one 400 × 1440 × 1024 tomogram (Z × Y × X, 2.4 GB float32) from MRC to MRC,
  memory-mapped, with each preset in turn while time is left.

``--deadline`` (seconds from the start) skips what would not finish in time, judged from the
runs before it, so the whole run fits a lease of a GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, command_line, log, machine_info, write_json
from _gpu_report import plot, render
from _suite_cases import CASES, scored, simulate_case

SECTIONS = ("smoke", "kernels", "train", "big", "suite")
# the suite's losing and tuning cases first, so a short lease measures those
SUITE_ORDER = (
    "vox4-crowded", "thick-gradient", "snr0.03", "tilt70-dosesym", "vox7-crowded",
    "thickness-y", "vox10-sparse", "vox14-bin4", "snr0.2-gauss", "tilt45", "fill-frame",
    "gold-fiducials", "detector-mtf",
)  # fmt: skip
BIG_SHAPE = (400, 1440, 1024)  # Z, Y, X: a K3 tomogram at bin 4 (5760 × 4092 detector)
# (batch, tile) of the kernel timings: two 64³ tiles per call (the CPU's default), and more
KERNEL_TILES = ((2, 64), (8, 64), (4, 96), (2, 128))
KERNEL_VARIANTS = (
    # name, autocast dtype, TF32, channels-last, cuDNN benchmark
    ("float32", None, False, False, False),
    ("tf32", None, True, False, False),
    ("float16", "float16", True, False, False),
    ("bfloat16", "bfloat16", True, False, False),
    ("tf32 channels-last", None, True, True, False),
    ("float16 channels-last", "float16", True, True, False),
    ("float16 + cudnn.benchmark", "float16", True, False, True),
    ("float16 channels-last + cudnn.benchmark", "float16", True, True, True),
)


class Clock:
    """Seconds since the run began, and whether ``need`` more seconds fit the deadline."""

    def __init__(self, deadline: float):
        self.start, self.deadline = time.perf_counter(), deadline

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, need: float) -> bool:
        return self.elapsed() + need <= self.deadline


class StageClock:
    """When each stage of the engine reported progress, in seconds since the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.times: dict[str, list[float]] = {}

    def __call__(self, event: Any) -> None:
        from napari_nmsg.engine import Progress

        if isinstance(event, Progress):
            self.times.setdefault(event.stage, []).append(time.perf_counter() - self.t0)

    def step_seconds(self, stage: str, after: int) -> float:
        """Median seconds between the stage's reports, leaving out the first ``after``."""
        return float(np.median(np.diff(self.times[stage][after:])))

    def split(self, total: float) -> dict[str, float]:
        """learn (up to the first training step), train, judge (the validation after the
        last step), denoise (the rest), in seconds."""
        train = self.times.get("train", [0.0])
        judged = self.times.get("validate", train)[-1]
        return {
            "learn_s": train[0],
            "train_s": train[-1] - train[0],
            "judge_s": judged - train[-1],
            "denoise_s": total - judged,
            "total_s": total,
        }


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


@contextlib.contextmanager
def cuda_flags(tf32: bool, benchmark: bool) -> Iterator[None]:
    """cuDNN/cuBLAS TF32 and cuDNN autotuning for the duration, restored afterwards."""
    import torch

    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        (
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) = saved


def gpu_facts() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "gpu_memory_gb": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tf32_default": torch.backends.cudnn.allow_tf32,
    }


# ------------------------------------------------------------------ smoke


def smoke(tmp: Path, device: str) -> dict[str, str]:
    """Every GPU path of the pipeline once, on a tiny volume: 'ok' or the error's last lines."""
    from napari_nmsg import denoise, denoise_file
    from napari_nmsg.engine import NMSGConfig, iter_run, load_model, run_events, save_model
    from napari_nmsg.io import write_mrc
    from napari_nmsg.simulate import simulate_tomogram

    noisy = simulate_tomogram((48, 48, 48), seed=0).noisy
    tiny = {"train_steps": 40, "gan_steps": 3, "seed": 0, "device": device}
    results: dict[str, str] = {}

    def attempt(name: str, step: Callable[[], Any]) -> Any:
        try:
            value = step()
            results[name] = "ok"
            return value
        except Exception:  # every step is tried; the report keeps what broke
            results[name] = traceback.format_exc(limit=-4)
            log(f"smoke {name} failed:\n{results[name]}")
            return None

    def fit(**changes: Any):
        config = NMSGConfig.preset("fast", **{**tiny, **changes})
        run = run_events(iter_run(noisy, config, preview_position=lambda: 24))
        results[f"{config.noise_model}, width {config.unet_width}: fell back"] = str(
            run.model.quality.fell_back
        )
        return run

    run = attempt("spectral, previews", lambda: fit(preview_every=20))
    attempt("gan noise model", lambda: fit(noise_model="gan"))
    attempt("quality network, 4 pairs", lambda: fit(unet_width=16, crop=40, inference_pairs=4))
    attempt("trained longer", lambda: fit(train_steps=300))
    if run is not None:
        saved = tmp / "smoke.nmsg.pt"
        reloaded = attempt("save, load", lambda: load_model(save_model(run.model, saved)))
        attempt("denoise with the reloaded model", lambda: denoise(noisy, reloaded))
    source = write_mrc(tmp / "smoke.mrc", noisy, (10.0,) * 3)
    config = NMSGConfig.preset("fast", **tiny)
    attempt("denoise_file MRC to MRC", lambda: denoise_file(source, tmp / "smoke_out.mrc", config))
    return results


# ------------------------------------------------------------------ kernels


def timed(fn: Callable[[], Any], repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def preset_network(preset: str):
    """The preset's U-Net with a Gaussian base and a non-zero head (a fresh one's head is
    zero, which would hide the precision error of the correction)."""
    from napari_nmsg.engine import NMSGConfig
    from napari_nmsg.engine.train import unet_for

    config = NMSGConfig.preset(preset)
    net = unet_for(config, 2.0)
    net.head.reset_parameters()
    return net.eval().requires_grad_(False)


def kernel_rates(clock: Clock, report: dict[str, Any], save: Callable[[], None], device: str):
    import torch

    from napari_nmsg.engine.unet import gaussian_blur

    torch.manual_seed(0)
    rows = report.setdefault("kernels", [])
    variants = KERNEL_VARIANTS if device == "cuda" else KERNEL_VARIANTS[:1]
    for preset in ("fast", "quality"):
        net = preset_network(preset).to(device)
        for batch, tile in KERNEL_TILES:
            x = torch.randn(batch, 1, tile, tile, tile, device=device)
            with torch.inference_mode(), cuda_flags(False, False):
                reference = net(x)
                correction = float((reference - gaussian_blur(x, net.base_taps)).std())
            for name, dtype, tf32, last, bench in variants:
                fmt = torch.channels_last_3d if last else torch.contiguous_format
                net = net.to(memory_format=fmt)
                forward = _forward(net, x.contiguous(memory_format=fmt), device, dtype)
                with torch.inference_mode(), cuda_flags(tf32, bench):
                    seconds = timed(forward)
                    error = float((forward() - reference).std()) / correction
                rows.append({
                    "preset": preset, "batch": batch, "tile": tile, "variant": name,
                    "mvox_s": x.numel() / seconds / 1e6, "ms": 1000 * seconds,
                    "relative_error": error,
                })  # fmt: skip
            net = net.to(memory_format=torch.contiguous_format)
            save()
        if device == "cuda" and clock.fits(90):
            rows.append(compiled_rate(net, preset, batch=8, tile=64))
            save()


def _forward(net, inputs, device: str, dtype: str | None) -> Callable[[], Any]:
    """One pass of ``net`` over ``inputs``, under autocast to ``dtype`` when given."""
    import torch

    autocast = getattr(torch, dtype) if dtype else None

    def forward():
        with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
            return net(inputs).float()

    return forward


def compiled_rate(net, preset: str, batch: int, tile: int) -> dict[str, Any]:
    """float16 autocast, contiguous, compiled (default mode); the first call's compile time."""
    import torch

    x = torch.randn(batch, 1, tile, tile, tile, device="cuda")
    forward = _forward(torch.compile(net), x, "cuda", "float16")
    with torch.inference_mode(), cuda_flags(True, False):
        t0 = time.perf_counter()
        forward()
        sync()
        compile_s = time.perf_counter() - t0
        seconds = timed(forward)
    return {
        "preset": preset, "batch": batch, "tile": tile, "variant": "float16 + torch.compile",
        "mvox_s": x.numel() / seconds / 1e6, "ms": 1000 * seconds, "compile_s": compile_s,
    }  # fmt: skip


# ------------------------------------------------------------------ training steps


def training_steps(clock: Clock, report: dict[str, Any], save: Callable[[], None], device: str):
    """ms per training step of each preset's network on real pairs, TF32 off and on, and
    the time of drawing one batch of pairs (crops on the CPU, noise on the device)."""
    import torch

    from napari_nmsg.engine import NMSGConfig, run_events
    from napari_nmsg.engine.noise_learning import iter_learn_noise_from
    from napari_nmsg.engine.pipeline import prepare_volume
    from napari_nmsg.engine.train import iter_train, noise_model_pairs

    data = simulate_case("vox4-crowded", 0)
    rows = report.setdefault("train", [])
    where = torch.device(device)
    for preset in ("fast", "quality"):
        config = NMSGConfig.preset(preset, seed=0, train_steps=300, base_sigma=2.0, device=device)
        multiple = 2 ** (config.unet_depth + config.space_to_depth)
        source = prepare_volume(data["noisy"], config)
        noise = run_events(iter_learn_noise_from([source], config))
        pairs = noise_model_pairs(source, noise.noise_model, config, where, multiple)
        rng, generator = np.random.default_rng(0), torch.Generator(where).manual_seed(0)
        pairs_s = timed(functools.partial(pairs, rng, generator), repeats=50)
        for tf32 in (False, True) if device == "cuda" else (False,):
            if not clock.fits(30):
                return
            stamps = StageClock()
            with cuda_flags(tf32, False):
                run_events(iter_train(pairs, config, where), stamps)
            rows.append({
                "preset": preset, "tf32": tf32,
                "step_ms": 1000 * stamps.step_seconds("train", after=50),
                "pairs_ms": 1000 * pairs_s, "crop": config.crop, "batch": config.batch_size,
                "width": config.unet_width,
            })  # fmt: skip
            save()


# ------------------------------------------------------------------ suite and big volume


def run_preset(data: dict[str, Any], preset: str, device: str) -> dict[str, Any]:
    """The preset on a suite case as ``nmsg denoise`` runs it."""
    from napari_nmsg.engine import NMSGConfig, iter_run, run_events
    from napari_nmsg.metrics import psnr

    config = NMSGConfig.preset(preset, seed=0, device=device)
    reset_peak_memory()
    stages = StageClock()
    run = run_events(iter_run(data["noisy"], config), stages)
    sync()
    quality = run.model.quality
    return {
        "psnr": psnr(scored(data, run.output), scored(data, data["target"])),
        **stages.split(time.perf_counter() - stages.t0),
        "gpu_peak_gb": peak_memory_gb(),
        "estimated_gain_db": quality.gain_over_gaussian_db,
        "fell_back": quality.fell_back,
        "base_sigma": run.model.config.base_sigma,
    }


def suite(
    clock: Clock,
    report: dict[str, Any],
    save: Callable[[], None],
    device: str,
    presets: list[str],
    cases: list[str],
) -> None:
    """Each preset on every case in turn, while the deadline allows: a run starts only if
    the longest of its preset so far would still finish."""
    rows = report.setdefault("suite", {})
    longest = dict.fromkeys(presets, 120.0)  # a guess until one is measured
    for preset in presets:
        for name in cases:
            if not clock.fits(1.2 * longest[preset] + 5):
                log(f"suite: no time left for {preset} on {name}")
                break
            t0 = time.perf_counter()
            data = simulate_case(name, 0)
            case = rows.setdefault(name, {"role": CASES[name]["role"]})
            case["simulate_s"] = time.perf_counter() - t0
            case[preset] = run_preset(data, preset, device)
            longest[preset] = case[preset]["total_s"]  # the longest: cases are alike in size
            log(f"[{name}] {preset}: {case[preset]['psnr']:.2f} dB in {longest[preset]:.1f} s")
            save()


def big_volume(
    clock: Clock,
    report: dict[str, Any],
    save: Callable[[], None],
    tmp: Path,
    device: str,
    presets: list[str],
) -> None:
    """One large tomogram from MRC to MRC as ``nmsg denoise`` runs it: the suite's 4 Å case
    mirrored out to ``BIG_SHAPE`` (its statistics, at the size of a real tomogram)."""
    from napari_nmsg import denoise_file
    from napari_nmsg.engine import NMSGConfig
    from napari_nmsg.io import write_mrc

    base = simulate_case("vox4-crowded", 0)["noisy"]
    pad = [(0, n - s) for n, s in zip(BIG_SHAPE, base.shape, strict=True)]
    source = write_mrc(tmp / "big.mrc", np.pad(base, pad, mode="symmetric"), (4.0,) * 3)
    rows = report.setdefault("big", {"shape": BIG_SHAPE})
    need = 240.0  # a guess for the first preset; each later one is given 1.5× the last
    for preset in presets:
        if not clock.fits(need):
            log(f"big: no time left for {preset}")
            return
        reset_peak_memory()
        stages = StageClock()
        config = NMSGConfig.preset(preset, seed=0, device=device)
        output = tmp / f"big_{preset}.mrc"
        seconds, quality = denoise_file(source, output, config, on_event=stages)
        split = stages.split(time.perf_counter() - stages.t0)
        rows[preset] = {
            **split, "file_seconds": seconds,
            "mvox_s": float(np.prod(BIG_SHAPE)) / split["denoise_s"] / 1e6,
            "gpu_peak_gb": peak_memory_gb(), "estimated_gain_db": quality.gain_over_gaussian_db,
        }  # fmt: skip
        output.unlink()
        need = 1.5 * split["total_s"]
        log(f"big {preset}: {split['total_s']:.0f} s, denoise {rows[preset]['mvox_s']:.0f} Mvox/s")
        save()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "gpu")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--deadline", type=float, default=540.0, help="seconds the run may take")
    p.add_argument("--device", default="cuda", help="cpu only checks the script")
    p.add_argument("--presets", default="fast,quality", help="the suite's and big's, in turn")
    p.add_argument("--cases", default=",".join(SUITE_ORDER), help="the suite section's")
    p.add_argument("--render", type=Path, help="only render gpu.md / gpu.png from gpu.json here")
    args = p.parse_args(argv)
    if args.render:
        report = json.loads((args.render / "gpu.json").read_text())
        (args.render / "gpu.md").write_text(render(report))
        plot(report, args.render / "gpu.png")
        return 0
    import torch

    from napari_nmsg.engine import PRESETS

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here (--device cpu only checks the script)")
    sections, presets, cases = (a.split(",") for a in (args.sections, args.presets, args.cases))
    unknown = (
        (set(sections) - set(SECTIONS)) | (set(presets) - set(PRESETS)) | (set(cases) - set(CASES))
    )
    if unknown:
        p.error(f"unknown section, preset or case: {', '.join(sorted(unknown))}")
    clock = Clock(args.deadline)
    path = args.out / "gpu.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("runs", []).append(
        {"command": command_line(__file__, argv),
         "machine": {**machine_info(), **gpu_facts()}}
    )  # fmt: skip

    def save() -> None:
        write_json(path, report)

    save()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for section in sections:
            log(f"section {section} at {clock.elapsed():.0f} s")
            try:
                if section == "smoke":
                    report["smoke"] = smoke(tmp, args.device)
                elif section == "kernels":
                    kernel_rates(clock, report, save, args.device)
                elif section == "train":
                    training_steps(clock, report, save, args.device)
                elif section == "big":
                    big_volume(clock, report, save, tmp, args.device, presets)
                elif section == "suite":
                    suite(clock, report, save, args.device, presets, cases)
            except Exception:  # one section's failure must not lose the others' numbers
                report.setdefault("errors", {})[section] = traceback.format_exc(limit=-6)
                log(f"section {section} failed:\n{report['errors'][section]}")
            save()
    log(f"done in {clock.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
