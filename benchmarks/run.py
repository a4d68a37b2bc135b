"""Quality benchmark: NMSG, its ablations and reference methods on simulated tomograms.

One command runs every method side by side on the same simulated volumes (ground truth
known) and writes ``quality.md``, ``quality.json`` and PNG figures to ``--out``::

    python benchmarks/run.py --quick      # one 96³ case, reduced steps (~10 min on 2 cores)
    python benchmarks/run.py --full       # four 128³ cases, preset budgets (hours on CPU)
    python benchmarks/run.py --quick --methods noisy,gaussian,nmsg --steps 50

Each method runs in a fresh Python process (so its peak RSS is its own) and is wrapped so
that a failure becomes a row in the table, not the end of the run. Every network method of
one run trains with the same step budget, crop, batch and U-Net; the table header says which.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    fmt,
    fsc_curve,
    fsc_resolution,
    log,
    machine_info,
    machine_markdown,
    markdown_table,
    peak_rss_mb,
    run_worker,
    write_json,
)

# ------------------------------------------------------------------ cases and methods

CASES: dict[str, dict[str, Any]] = {
    "tiny-48": {"shape": (48, 48, 48), "snr": 0.1},  # smoke tests of the harness only
    "quick-96": {"shape": (96, 96, 96), "snr": 0.1},
    "snr0.1": {"shape": (128, 128, 128), "snr": 0.1},
    "snr0.05": {"shape": (128, 128, 128), "snr": 0.05},
    "thick": {"shape": (128, 128, 128), "snr": 0.1, "slab_fraction": 0.7},
    "aniso": {"shape": (128, 128, 128), "snr": 0.1, "tilt_range": 45.0, "defocus_um": 5.0},
}
CASE_NOTES = {
    "tiny-48": "48³ smoke test of the harness (no tile borders inside)",
    "quick-96": "96³, projection SNR 0.1, ±60° / 3°, defocus 3 µm, slab 50 %",
    "snr0.1": "128³, projection SNR 0.1, ±60° / 3°, defocus 3 µm, slab 50 %",
    "snr0.05": "128³, projection SNR 0.05 (noisier), ±60° / 3°, defocus 3 µm",
    "thick": "128³, SNR 0.1, thicker specimen (slab 70 %: less empty ice for noise patches)",
    "aniso": "128³, SNR 0.1, ±45° tilts (bigger missing wedge), defocus 5 µm",
}
QUICK = {"cases": ["quick-96"], "steps": 300, "gan_steps": 20, "curve_points": 2}
FULL = {"cases": ["snr0.1", "snr0.05", "thick", "aniso"], "curve_points": 6}


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    kind: str  # input | classical | reference | nmsg | preset
    overrides: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None


PAPER_LOSS = {"lambda_grad": 0.1, "lambda_gui": 0.5}
METHODS = [
    Method("noisy", "noisy input", "input"),
    Method("gaussian", "Gaussian filter, oracle σ", "classical"),
    Method("tv", "total variation (Chambolle), oracle weight", "classical"),
    Method("n2n", "Noise2Noise on even/odd halves", "reference"),
    Method("supervised", "supervised on ground truth (ceiling: needs ground truth)", "reference"),
    Method("nmsg", "NMSG default", "nmsg"),
    Method("nmsg-spectral", "NMSG, spectral noise model", "nmsg", {"noise_model": "spectral"}),
    Method("nmsg-gan", "NMSG, GAN noise model", "nmsg", {"noise_model": "gan"}),
    Method(
        "nmsg-pairs-paper",
        "NMSG, paper pairs f(y+n)→y, f(y)",
        "nmsg",
        {"pairing": "paper", "inference_pairs": 0},
    ),
    Method(
        "nmsg-noisier2noise",
        "NMSG, Noisier2Noise pairs + correction",
        "nmsg",
        {"pairing": "noisier2noise"},
    ),
    Method("nmsg-grad", "NMSG + sparsity term (λ_grad 0.1)", "nmsg", {"lambda_grad": 0.1}),
    Method("nmsg-gui", "NMSG + guidance term (λ_gui 0.5)", "nmsg", {"lambda_gui": 0.5}),
    Method("nmsg-paper-loss", "NMSG + paper loss (1 / 0.1 / 0.5)", "nmsg", PAPER_LOSS),
    Method(
        "nmsg-paper",
        "NMSG as published (paper pairs + loss 1 / 0.1 / 0.5)",
        "nmsg",
        {"pairing": "paper", "inference_pairs": 0, **PAPER_LOSS},
    ),
    Method("preset-fast", "preset fast", "preset", preset="fast"),
    Method("preset-balanced", "preset balanced", "preset", preset="balanced"),
    Method("preset-quality", "preset quality", "preset", preset="quality"),
]
BY_NAME = {m.name: m for m in METHODS}
# Other inferences of a row's trained network, reported as rows of their own
VARIANT_LABELS = {
    "single-pass": "one pass f(y) instead of averaged ±z pairs",
    "halves": "inference ½(f(even) + f(odd)) at its training noise level",
}
CURVE_METHODS = ("nmsg", "n2n", "supervised")


def default_methods(preset: str, noise_model: str, full: bool) -> list[str]:
    names = []
    for m in METHODS:
        if m.kind == "preset" and (not full or m.preset == preset):
            continue  # presets: full mode only; the preset under test is the "nmsg" row
        if m.kind == "nmsg" and m.name != "nmsg" and m.overrides == {"noise_model": noise_model}:
            continue  # the same as the default row
        names.append(m.name)
    return names


# ------------------------------------------------------------------ worker side


def _config(spec: dict[str, Any]):
    from napari_nmsg.engine import NMSGConfig

    return NMSGConfig.from_dict(spec["config"])


def _load(case_dir: Path, name: str) -> np.ndarray:
    return np.load(case_dir / f"{name}.npy")


def _timed_events(progress_every: float = 0.1):
    """An ``on_event`` that prints sparse progress lines and keeps the last train metrics."""
    from napari_nmsg.engine import Progress

    state: dict[str, Any] = {"last": {}, "printed": {}}
    start = time.perf_counter()

    def on_event(event) -> None:
        if not isinstance(event, Progress):
            return
        state["last"][event.stage] = event
        total = max(event.total, 1)
        every = max(1, round(total * progress_every))
        if event.step == total or event.step % every == 0:
            metrics = " ".join(f"{k}={v:.4g}" for k, v in event.metrics.items())
            print(
                f"    {event.stage} {event.step}/{total} {metrics} "
                f"({time.perf_counter() - start:.0f}s)",
                flush=True,
            )

    return on_event, state


def worker_noise(spec: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Learn one noise model; fidelity against held-out patches AND against the true noise."""
    import torch

    from napari_nmsg.engine import iter_learn_noise, run_events
    from napari_nmsg.engine.noise_model import mean_power_spectrum, noise_fidelity, sample_patches
    from napari_nmsg.engine.volume import canonical_view

    config = _config(spec)
    on_event, _ = _timed_events(0.2)
    t0 = time.perf_counter()
    learning = run_events(iter_learn_noise(data["noisy"], config), on_event)
    seconds = time.perf_counter() - t0
    torch.save(learning, spec["noise_out"])

    # the simulator knows the noise: cut patches of it at random positions
    norm = learning.normalisation
    true_noise = canonical_view((data["noisy"] - data["target"]) / norm.scale, norm.wedge_axis)
    size = learning.patches.patch_size
    rng = np.random.default_rng(config.seed + 1)
    count = max(64, 4 * len(learning.real_examples))
    corners = [[int(rng.integers(0, n - size + 1)) for n in true_noise.shape] for _ in range(count)]
    true_patches = np.stack(
        [true_noise[z : z + size, y : y + size, x : x + size] for z, y, x in corners]
    ).astype(np.float32)
    true_patches -= true_patches.mean(axis=(1, 2, 3), keepdims=True)
    generator = torch.Generator().manual_seed(config.seed + 2)
    generated = sample_patches(learning.noise_model.cpu(), count, size, generator)
    vs_true = {
        config.noise_model: noise_fidelity(generated, true_patches),
        "extracted patches": noise_fidelity(learning.patches.patches, true_patches),
    }
    np.savez(
        spec["spectra_out"],
        true=mean_power_spectrum(true_patches),
        extracted=mean_power_spectrum(learning.patches.patches),
        generated=mean_power_spectrum(generated),
    )
    return {
        "noise_s": seconds,
        "note": learning.patches.note,
        "patches": len(learning.patches.patches),
        "patch_size": size,
        "fidelity_held_out": learning.fidelity,
        "fidelity_true": vs_true,
        "true_noise_std_normalised": float(true_noise.std()),
    }


def _curve_recorder(target: np.ndarray, printer: Callable[[Any], None]):
    """Event handler that turns full-volume previews into (train seconds, PSNR) points.

    Every event is also passed on to ``printer`` (the worker's progress lines).
    """
    from napari_nmsg.engine import Preview, Progress
    from napari_nmsg.metrics import psnr

    state: dict[str, Any] = {"t0": time.perf_counter(), "eval_s": 0.0, "curve": []}
    state["last_t"], state["step"] = state["t0"], 0

    def record(step: int, estimate: np.ndarray, started: float) -> None:
        train_s = started - state["t0"] - state["eval_s"]
        value = psnr(estimate, target)
        state["curve"].append({"step": step, "train_s": train_s, "psnr": value})
        state["eval_s"] += time.perf_counter() - started
        print(f"    checkpoint step {step}: PSNR {value:.2f} dB after {train_s:.0f}s", flush=True)

    def on_event(event) -> None:
        printer(event)
        if isinstance(event, Progress) and event.stage == "train":
            state["last_t"], state["step"] = time.perf_counter(), event.step
        elif isinstance(event, Preview):
            record(state["step"], event.array, state["last_t"])

    state["record"], state["on_event"] = record, on_event
    return state


def _save_variant(spec: dict[str, Any], name: str, volume: np.ndarray, infer_s: float):
    """Another inference of the method's trained network, scored as its own row."""
    path = spec["out"].replace(".npy", f"_{name}.npy")
    np.save(path, volume)
    return {"file": path, "infer_s": infer_s}


def worker_nmsg(spec: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    from napari_nmsg.engine import iter_denoise, iter_fit_denoiser, run_events

    config = _config(spec)
    noisy = data["noisy"]
    noise = None
    noise_s = 0.0
    if spec.get("noise_path"):
        noise = torch.load(spec["noise_path"], weights_only=False)
        noise_s = spec.get("noise_s", 0.0)
    points = spec.get("curve_points", 0)
    position = None
    if points:
        config = config.replace(
            preview_every=max(1, config.train_steps // points), preview_depth=2 * max(noisy.shape)
        )

        def position() -> int:
            return noisy.shape[0] // 2

    printer, _ = _timed_events()
    curve = _curve_recorder(data["target"], printer)
    t0 = time.perf_counter()
    model = run_events(iter_fit_denoiser(noisy, config, noise, position), curve["on_event"])
    fit_s = time.perf_counter() - t0 - curve["eval_s"]
    t1 = time.perf_counter()
    out = run_events(iter_denoise(noisy, model), printer)
    infer_s = time.perf_counter() - t1
    np.save(spec["out"], out)
    result = {
        "noise_s": noise_s,
        "fit_s": fit_s,
        "infer_s": infer_s,
        "curve": curve["curve"],
        "fidelity_held_out": model.fidelity,
        "noise_model_used": getattr(model.noise_model, "kind", "?"),
    }
    if noise is None:  # learned inside the fit (presets): its time is part of fit_s
        result["noise_in_fit"] = True
    result["peak_rss_method_mb"] = peak_rss_mb()  # before the seam controls below
    if config.pairing == "r2r" and config.inference_pairs:
        t2 = time.perf_counter()
        single = run_events(iter_denoise(noisy, model, config=config.replace(inference_pairs=0)))
        result["variants"] = {
            "single-pass": _save_variant(spec, "single-pass", single, time.perf_counter() - t2)
        }
    if spec.get("seam_control"):
        # the same model without blending (overlap 0), and on the whole volume in one tile
        control = run_events(iter_denoise(noisy, model, config=model.config.replace(overlap=0)))
        np.save(spec["out"].replace(".npy", "_overlap0.npy"), control)
        multiple = model.denoiser.multiple
        whole = -(-max(noisy.shape) // multiple) * multiple
        untiled = run_events(
            iter_denoise(noisy, model, config=model.config.replace(tile=whole, tile_batch=1))
        )
        np.save(spec["out"].replace(".npy", "_untiled.npy"), untiled)
    return result


def worker_reference(spec: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Noise2Noise (even/odd) or supervised (noisy → target) with the NMSG U-Net and loop."""
    import torch

    from napari_nmsg.engine import NMSGModel, iter_denoise, resolve_device, run_events
    from napari_nmsg.engine.noise_model import SpectralNoise
    from napari_nmsg.engine.train import aligned_pairs, iter_train
    from napari_nmsg.engine.volume import NormalisedVolume, fit_normalisation

    # the network is used as f(y) (no noise model to recorrupt with)
    config = _config(spec).replace(pairing="r2r", inference_pairs=0)
    noisy = data["noisy"]
    device = resolve_device(config.device)
    norm = fit_normalisation(noisy, config.wedge_axis, seed=config.seed)
    if spec["method"] == "n2n":
        pairs = aligned_pairs(
            NormalisedVolume(data["even"], norm),
            NormalisedVolume(data["odd"], norm),
            config,
            device,
            config.multiple,
            swap=True,
        )
    else:
        pairs = aligned_pairs(
            NormalisedVolume(noisy, norm),
            NormalisedVolume(data["target"], norm),
            config,
            device,
            config.multiple,
        )
    empty_noise = SpectralNoise(torch.zeros(3, 3, 3))

    def wrap(net) -> NMSGModel:
        return NMSGModel(config, empty_noise, net, norm)

    points = spec.get("curve_points", 0)
    printer, _ = _timed_events()
    curve = _curve_recorder(data["target"], printer)
    on_checkpoint = None
    if points:
        config = config.replace(preview_every=max(1, config.train_steps // points))

        def on_checkpoint(net):
            started = time.perf_counter()
            estimate = run_events(iter_denoise(noisy, wrap(net)))
            curve["record"](curve["step"], estimate, started)
            return ()

    t0 = time.perf_counter()
    net = run_events(iter_train(pairs, config, device, on_checkpoint), curve["on_event"])
    fit_s = time.perf_counter() - t0 - curve["eval_s"]
    t1 = time.perf_counter()
    out = run_events(iter_denoise(noisy, wrap(net.cpu())), printer)
    infer_s = time.perf_counter() - t1
    np.save(spec["out"], out)
    result = {"fit_s": fit_s, "infer_s": infer_s, "curve": curve["curve"]}
    if spec["method"] == "n2n":
        # N2N's own way to meet its training noise level: ½(f(even) + f(odd)), each half
        # normalised exactly as in training
        t2 = time.perf_counter()
        halves = [
            run_events(iter_denoise(data[k], wrap(net), normalisation=norm))
            for k in ("even", "odd")
        ]
        mean = (halves[0] + halves[1]) / 2
        result["variants"] = {
            "halves": _save_variant(spec, "halves", mean, time.perf_counter() - t2)
        }
    return result


def worker_classical(spec: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, Any]:
    from scipy import ndimage
    from skimage.restoration import denoise_tv_chambolle

    from napari_nmsg.engine.volume import fit_normalisation
    from napari_nmsg.metrics import best_gaussian, psnr

    noisy, target = data["noisy"], data["target"]
    t0 = time.perf_counter()
    if spec["method"] == "gaussian":
        score, sigma, _ = best_gaussian(noisy, target)
        search_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        out = ndimage.gaussian_filter(noisy, sigma)
        return_value = {"infer_s": time.perf_counter() - t1, "search_s": search_s}
        return_value["parameter"] = f"σ = {sigma:.3f} voxels"
    else:
        norm = fit_normalisation(noisy)
        scaled = (noisy - norm.offset) / norm.scale
        best = (-np.inf, None, None, 0.0)
        for weight in 0.25 * 2 ** (np.arange(9) / 2):  # 0.25 … 4 noise σ, √2 steps
            t1 = time.perf_counter()
            estimate = denoise_tv_chambolle(scaled, weight=float(weight))
            seconds = time.perf_counter() - t1
            score = psnr(estimate, target)
            if score > best[0]:
                best = (score, float(weight), estimate, seconds)
        out = best[2] * norm.scale + norm.offset
        return_value = {
            "infer_s": best[3],
            "search_s": time.perf_counter() - t0,
            "parameter": f"weight = {best[1]:.3g} × noise σ (MAD)",
        }
    np.save(spec["out"], out.astype(np.float32))
    return return_value


def worker_main(spec_path: str) -> int:
    """Entry point of a worker process: run one method, write its output and a result JSON."""
    spec = json.loads(Path(spec_path).read_text())
    started = time.perf_counter()
    result: dict[str, Any] = {"ok": False}
    try:
        import torch

        import napari_nmsg  # noqa: F401  (imports counted in the baseline)

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        case_dir = Path(spec["case_dir"])
        data = {k: _load(case_dir, k) for k in ("noisy", "even", "odd", "target")}
        result["baseline_rss_mb"] = peak_rss_mb()
        kind = spec["kind"]
        run = {
            "noise": worker_noise,
            "nmsg": worker_nmsg,
            "preset": worker_nmsg,
            "reference": worker_reference,
            "classical": worker_classical,
        }[kind]
        result.update(run(spec, data))
        result["ok"] = True
    except Exception as exc:  # reported in the table, never fatal for the run
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["peak_rss_mb"] = result.pop("peak_rss_method_mb", None) or peak_rss_mb()
    result["worker_s"] = time.perf_counter() - started
    result["torch_threads"] = _torch_threads()
    write_json(Path(spec["result"]), result)
    return 0 if result["ok"] else 1


def _torch_threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


# ------------------------------------------------------------------ metrics (main process)


def seam_check(
    estimate: np.ndarray, target: np.ndarray, tile: int, overlap: int, multiple: int, axis: int
) -> dict[str, Any]:
    """Error at tile borders vs just beside them, for the tiling the engine used.

    For every tile border plane inside the volume (the start or end of a tile) the mean
    ``|estimate − target|`` on the two voxel layers at the border is compared with the mean
    on layers 2–4 voxels away on either side, so slow trends (specimen slab vs empty ice)
    cancel. A ratio of about 1 means no seam; above 1, borders are worse.
    """
    from napari_nmsg.engine.tiling import tile_sizes, tile_starts
    from napari_nmsg.metrics import affine_fit

    error = np.abs(affine_fit(estimate, target) - target)
    error = np.moveaxis(error, axis, 0)
    sizes = tile_sizes(error.shape, tile, multiple)
    border_sum = beside_sum = 0.0
    border_n = beside_n = 0
    per_axis = {}
    for ax, (length, size) in enumerate(zip(error.shape, sizes, strict=True)):
        ov = min(overlap, size // 2)
        starts = tile_starts(length, size, ov)
        planes = sorted(
            {s for s in starts if s > 0} | {s + size for s in starts if s + size < length}
        )
        profile = error.mean(axis=tuple(a for a in range(3) if a != ax))
        b_vals, s_vals = [], []
        for p in planes:
            b_vals += [profile[i] for i in (p - 1, p) if 0 <= i < length]
            s_vals += [profile[i] for i in (p - 4, p - 3, p + 2, p + 3) if 0 <= i < length]
        if b_vals and s_vals:
            per_axis[ax] = {
                "planes": planes,
                "ratio": float(np.mean(b_vals) / np.mean(s_vals)),
            }
            border_sum += float(np.sum(b_vals))
            border_n += len(b_vals)
            beside_sum += float(np.sum(s_vals))
            beside_n += len(s_vals)
    ratio = (border_sum / border_n) / (beside_sum / beside_n) if border_n and beside_n else None
    return {"tile": tile, "overlap": overlap, "ratio": ratio, "per_axis": per_axis}


def seam_controls(
    estimate: np.ndarray,
    case_dir: Path,
    target: np.ndarray,
    tile: int,
    overlap: int,
    multiple: int,
    axis: int,
) -> dict[str, Any]:
    """Seam ratios of the shipped output and of its two controls, at the same planes."""
    from napari_nmsg.metrics import psnr

    rows = {"blended": (estimate, overlap)}
    for name in ("overlap0", "untiled"):
        path = case_dir / f"nmsg_{name}.npy"
        if path.exists():
            rows[name] = (np.load(path), 0 if name == "overlap0" else overlap)
    out: dict[str, Any] = {}
    for name, (volume, ov) in rows.items():
        out[name] = seam_check(volume, target, tile, ov, multiple, axis)
        out[name]["psnr"] = psnr(volume, target)
    if "untiled" in rows:
        untiled = rows["untiled"][0]
        for name in ("blended", "overlap0"):
            if name in rows:
                tiling = np.sqrt(np.mean((rows[name][0] - untiled) ** 2))
                error = np.sqrt(np.mean((untiled - target) ** 2))
                out[name]["tiling_rms_over_error_rms"] = float(tiling / error)
    return out


def quality_metrics(estimate: np.ndarray, target: np.ndarray, voxel: float) -> dict[str, Any]:
    from skimage.metrics import structural_similarity

    from napari_nmsg.metrics import affine_fit, pearson, psnr

    fitted = affine_fit(estimate, target)
    freq, curve = fsc_curve(fitted, target)
    res05, n05 = fsc_resolution(freq, curve, 0.5, voxel)
    res0143, n0143 = fsc_resolution(freq, curve, 0.143, voxel)
    return {
        "psnr": psnr(estimate, target),
        "ssim": float(
            structural_similarity(fitted, target, data_range=float(target.max() - target.min()))
        ),
        "pearson": pearson(estimate, target),
        "fsc_0.5_A": res05,
        "fsc_0.5_at_nyquist": n05,
        "fsc_0.143_A": res0143,
        "fsc_0.143_at_nyquist": n0143,
        "fsc_curve": {"freq": freq.round(4).tolist(), "fsc": curve.round(4).tolist()},
    }


# ------------------------------------------------------------------ orchestration


class Runner:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.script = Path(__file__).resolve()
        self.start = time.perf_counter()

    def call(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Run one worker (fresh subprocess unless --in-process); never raises."""
        spec_path = self.work / f"{name}.spec.json"
        spec["result"] = str(self.work / f"{name}.result.json")
        write_json(spec_path, spec)
        t0 = time.perf_counter()
        tail: list[str] = []
        try:
            if self.args.in_process:
                worker_main(str(spec_path))
            else:
                _, tail = run_worker(
                    self.script,
                    spec_path,
                    lambda line: print(line, flush=True),
                    self.args.method_timeout,
                )
            result = json.loads(Path(spec["result"]).read_text())
        except Exception as exc:  # a crash, a kill or an unreadable result
            last = next((t for t in reversed(tail) if t.strip()), "")
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}; {last}"[:300]}
        result["process_s"] = time.perf_counter() - t0
        return result


def method_config(base, method: Method, args: argparse.Namespace, sets: dict[str, Any]):
    from napari_nmsg.engine import NMSGConfig

    if method.kind != "preset":
        changes = dict(method.overrides)
        if changes.get("pairing") == "noisier2noise":  # its correction needs recorrupted copies
            changes.setdefault("inference_pairs", max(1, base.inference_pairs))
        return base.replace(**changes)
    reference = NMSGConfig.preset(args.preset)
    own = NMSGConfig.preset(method.preset)
    steps = max(1, round(own.train_steps * base.train_steps / reference.train_steps))
    gan = max(1, round(own.gan_steps * base.gan_steps / max(reference.gan_steps, 1)))
    return NMSGConfig.preset(
        method.preset,
        **{**sets, "device": base.device, "seed": base.seed},
        train_steps=steps,
        gan_steps=gan,
    )


def run_case(
    case: str, args: argparse.Namespace, runner: Runner, report: dict[str, Any], base, sets
) -> None:
    from napari_nmsg.simulate import simulate_tomogram

    case_dir = runner.work / case
    case_dir.mkdir(parents=True, exist_ok=True)
    params = CASES[case]
    log(f"[{case}] simulating {params}", runner.start)
    t0 = time.perf_counter()
    sim = simulate_tomogram(
        params["shape"], seed=args.seed, **{k: v for k, v in params.items() if k != "shape"}
    )
    for key in ("noisy", "even", "odd", "target"):
        np.save(case_dir / f"{key}.npy", getattr(sim, key))
    entry: dict[str, Any] = {
        "params": {**params, "shape": list(params["shape"]), "seed": args.seed},
        "description": CASE_NOTES.get(case, ""),
        "voxel_size_A": sim.voxel_size,
        "simulate_s": time.perf_counter() - t0,
        "noise": {},
        "methods": {},
    }
    report["cases"][case] = entry
    target, voxel = sim.target, sim.voxel_size
    outputs: dict[str, np.ndarray] = {}

    methods = [BY_NAME[n] for n in args.method_list]
    if args.full and not args.methods_given and case != args.case_list[0]:
        methods = [m for m in methods if m.kind != "preset"]  # presets: first case only
    configs = {
        m.name: method_config(base, m, args, sets)
        for m in methods
        if m.kind in ("nmsg", "preset", "reference")
    }

    # noise models shared by the NMSG rows: learned once per kind, in their own process
    kinds = sorted({configs[m.name].noise_model for m in methods if m.kind == "nmsg"})
    if kinds:
        kinds = sorted(set(kinds) | {"spectral"})
    noise_paths: dict[str, tuple[str, float]] = {}
    for kind in kinds:
        cfg = base.replace(noise_model=kind)
        log(
            f"[{case}] learning the {kind} noise model "
            f"({cfg.gan_steps if kind == 'gan' else 0} GAN steps)",
            runner.start,
        )
        spec = {
            "kind": "noise",
            "method": f"noise-{kind}",
            "case_dir": str(case_dir),
            "config": cfg.to_dict(),
            "noise_out": str(case_dir / f"noise-{kind}.pt"),
            "spectra_out": str(case_dir / f"noise-{kind}-spectra.npz"),
            "threads": args.threads,
        }
        result = runner.call(f"{case}-noise-{kind}", spec)
        entry["noise"][kind] = result
        if result.get("ok"):
            noise_paths[kind] = (spec["noise_out"], result["noise_s"])
            log(
                f"[{case}] {kind} noise model: {result['noise_s']:.0f}s, {result['note']}",
                runner.start,
            )
        else:
            log(f"[{case}] {kind} noise model FAILED: {result.get('error')}", runner.start)
        write_reports(report, args)

    for method in methods:
        log(f"[{case}] {method.name}: {method.label}", runner.start)
        out_path = case_dir / f"{method.name}.npy"
        if method.kind == "input":
            result = {"ok": True, "infer_s": 0.0}
            np.save(out_path, sim.noisy)
        else:
            spec: dict[str, Any] = {
                "kind": method.kind,
                "method": method.name,
                "case_dir": str(case_dir),
                "out": str(out_path),
                "threads": args.threads,
                "config": (configs.get(method.name) or base).to_dict(),
            }
            if method.name in CURVE_METHODS:
                spec["curve_points"] = args.curve_points
            if method.name == "nmsg":
                spec["seam_control"] = True
            if method.kind == "nmsg":
                kind = configs[method.name].noise_model
                if kind not in noise_paths:
                    result = {"ok": False, "error": f"the {kind} noise model could not be learned"}
                    entry["methods"][method.name] = {"label": method.label, **result}
                    continue
                spec["noise_path"], spec["noise_s"] = noise_paths[kind]
            result = runner.call(f"{case}-{method.name}", spec)
        row: dict[str, Any] = {"label": method.label, **result}
        if method.name in configs:
            cfg = configs[method.name]
            row["budget"] = {
                "train_steps": cfg.train_steps,
                "gan_steps": cfg.gan_steps if cfg.noise_model == "gan" else 0,
                "crop": cfg.crop,
                "batch": cfg.batch_size,
                "unet": f"depth {cfg.unet_depth}, width {cfg.unet_width}"
                + (", space-to-depth" if cfg.space_to_depth else ""),
            }
        if result.get("ok"):
            try:
                estimate = np.load(out_path)
                outputs[method.name] = estimate
                row.update(quality_metrics(estimate, target, voxel))
                if method.name == "nmsg":
                    cfg = configs["nmsg"]
                    axis = (
                        int(np.argmin(estimate.shape)) if cfg.wedge_axis is None else cfg.wedge_axis
                    )
                    row["seam"] = seam_controls(
                        estimate, case_dir, target, cfg.tile, cfg.overlap, cfg.multiple, axis
                    )
            except Exception as exc:
                row["ok"] = False
                row["error"] = f"metrics: {type(exc).__name__}: {exc}"
        entry["methods"][method.name] = row
        for variant, info in (result.get("variants") or {}).items() if result.get("ok") else ():
            name = f"{method.name}-{variant}"
            extra = {
                **{k: v for k, v in row.items() if k in ("noise_s", "fit_s", "budget")},
                "label": f"{method.label}, {VARIANT_LABELS[variant]}",
                "ok": True,
                "infer_s": info["infer_s"],
                "same_network_as": method.name,
            }
            estimate = np.load(info["file"])
            outputs[name] = estimate
            extra.update(quality_metrics(estimate, target, voxel))
            entry["methods"][name] = extra
            log(f"[{case}] {name}: PSNR {extra['psnr']:.2f} dB", runner.start)
        if row.get("ok"):
            total = row.get("noise_s", 0) + row.get("fit_s", 0) + row.get("infer_s", 0)
            log(
                f"[{case}] {method.name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
                f"{total:.0f}s, peak RSS {row.get('peak_rss_mb', 0):.0f} MB",
                runner.start,
            )
        else:
            log(f"[{case}] {method.name} FAILED: {row.get('error')}", runner.start)
        write_reports(report, args)

    try:
        make_figures(case, entry, outputs, target, voxel, case_dir, args.out)
    except Exception as exc:
        entry["figure_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{case}] figures FAILED: {exc}", runner.start)
    write_reports(report, args)


def make_figures(case, entry, outputs, target, voxel, case_dir: Path, out: Path) -> None:
    import _figures
    from napari_nmsg.metrics import affine_fit

    figures = entry.setdefault("figures", {})
    lo, hi = np.percentile(target, [0.5, 99.5])
    panels = [("ground truth (noiseless WBP)", target)]
    for name, volume in outputs.items():
        row = entry["methods"][name]
        panels.append((f"{name}\n{row['psnr']:.2f} dB", affine_fit(volume, target)))
    path = out / f"slices_{case}.png"
    _figures.central_slices(
        path, panels, f"{case}: central XY (top) and XZ (bottom) slices", (lo, hi)
    )
    figures["slices"] = path.name

    spectra = {}
    for kind in entry["noise"]:
        npz = case_dir / f"noise-{kind}-spectra.npz"
        if npz.exists():
            with np.load(npz) as data:
                spectra.setdefault("true noise (noisy − target)", data["true"])
                spectra.setdefault("real patches (extracted)", data["extracted"])
                spectra[f"generated: {kind}"] = data["generated"]
    if spectra:
        path = out / f"noise_spectra_{case}.png"
        _figures.noise_spectra(path, spectra, f"{case}: noise power spectra (normalised units)")
        figures["noise_spectra"] = path.name

    curves = {
        name: entry["methods"][name].get("curve", [])
        for name in CURVE_METHODS
        if name in entry["methods"] and entry["methods"][name].get("curve")
    }
    if curves:
        lines = {
            name: entry["methods"][name]["psnr"]
            for name in ("noisy", "gaussian")
            if entry["methods"].get(name, {}).get("ok")
        }
        path = out / f"psnr_vs_time_{case}.png"
        _figures.psnr_vs_time(
            path, curves, lines, f"{case}: PSNR of EMA checkpoints vs training time"
        )
        figures["psnr_vs_time"] = path.name

    fsc = {
        name: (np.array(row["fsc_curve"]["freq"]), np.array(row["fsc_curve"]["fsc"]))
        for name, row in entry["methods"].items()
        if row.get("ok") and "fsc_curve" in row
    }
    if fsc:
        path = out / f"fsc_{case}.png"
        _figures.fsc_curves(path, fsc, voxel, f"{case}: FSC against the noiseless target")
        figures["fsc"] = path.name


# ------------------------------------------------------------------ reports


def _resolution(row: dict[str, Any], key: str) -> str:
    value = row.get(f"fsc_{key}_A")
    if value is None:
        return "–"
    return ("≤" if row.get(f"fsc_{key}_at_nyquist") else "") + f"{value:.0f}"


def write_reports(report: dict[str, Any], args: argparse.Namespace) -> None:
    report["end_load_avg"] = [round(v, 2) for v in os.getloadavg()]
    report["elapsed_s"] = time.perf_counter() - report["_t0"]
    write_json(
        args.out / "quality.json", {k: v for k, v in report.items() if not k.startswith("_")}
    )
    (args.out / "quality.md").write_text(render_markdown(report))


def render_markdown(report: dict[str, Any]) -> str:
    b = report["budget"]
    lines = [
        "# NMSG quality benchmark",
        "",
        f"Mode `{report['mode']}`; command `{report['command']}`; "
        f"total {report['elapsed_s'] / 60:.1f} min.",
        "",
        machine_markdown(report["machine"], report["end_load_avg"]),
        "",
        f"**Budget (same for every network row unless its `steps` cell says otherwise):** "
        f"{b['train_steps']} training steps × batch {b['batch']} × {b['crop']}³ crops, U-Net "
        f"{b['unet']}, Adam lr {b['lr']} with cosine decay, EMA weights; GAN noise model "
        f"{b['gan_steps']} steps; preset `{report['preset']}`"
        + (f", overrides {report['overrides']}" if report["overrides"] else "")
        + ". Preset rows scale their own step counts by the same factor as this run "
        f"({b['train_steps']} / the `{report['preset']}` preset's {b['preset_train_steps']}).",
        "",
        "PSNR: dB over the target's range after the best affine intensity fit; SSIM: 3D, on the "
        "affine-fitted estimate, data range of the target; r: Pearson; FSC: against the "
        "noiseless target (same wedge and CTF), resolution in Å where it first drops below "
        "0.5 / 0.143 (≤ means it never did, up to Nyquist; against a noise-free reference "
        "0.5 is the meaningful threshold). Times: `noise` = learning the noise model (shared "
        "by the NMSG rows that use it; counted in each row's total), `fit` = training, `infer` "
        "= tiled inference of the whole volume; time for oracle parameter searches is not "
        "counted. Peak RSS: each method ran in a fresh process; peak = that process's own "
        "high-water mark (`VmHWM`; `ru_maxrss` is not used because Linux carries the "
        "parent's peak over fork + exec), Δ = peak minus the peak after importing torch + "
        "napari_nmsg and loading the volumes.",
    ]
    if report["mode"] == "quick":
        lines += [
            "",
            "> **Quick mode**: step budgets are a small fraction of the presets' (fast: "
            f"{b['preset_train_steps']} steps, {b['preset_gan_steps']} GAN steps), so the "
            "network rows are far from converged. The quick run checks the whole harness "
            "end to end; compare methods with `--full` (or `--steps 300`).",
        ]
    for case, entry in report["cases"].items():
        lines += ["", f"## Case `{case}`: {entry['description']}", ""]
        lines += [
            f"Voxel size {entry['voxel_size_A']:.0f} Å; simulation {entry['simulate_s']:.1f} s.",
            "",
        ]
        rows = []
        noisy_psnr = entry["methods"].get("noisy", {}).get("psnr")
        for name, row in entry["methods"].items():
            if not row.get("ok"):
                rows.append(
                    [
                        f"`{name}`",
                        row["label"],
                        "FAILED",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        row.get("error", "")[:160],
                    ]
                )
                continue
            total = row.get("noise_s", 0) + row.get("fit_s", 0) + row.get("infer_s", 0)
            gain = row["psnr"] - noisy_psnr if noisy_psnr is not None else None
            steps = row.get("budget", {}).get("train_steps")
            notes = []
            if row.get("parameter"):
                notes.append(row["parameter"])
            if row.get("search_s"):
                notes.append(f"oracle search {row['search_s']:.1f}s")
            if row.get("noise_in_fit"):
                notes.append("noise learned inside fit")
            if row.get("budget", {}).get("gan_steps") and not name.startswith(("n2n", "sup")):
                notes.append(f"GAN {row['budget']['gan_steps']} steps")
            if name.startswith("preset"):
                notes.append(row["budget"]["unet"] + f", crop {row['budget']['crop']}")
            rss = row.get("peak_rss_mb")
            rss_cell = f"{rss:.0f} (Δ {rss - row.get('baseline_rss_mb', 0):.0f})" if rss else "–"
            rows.append(
                [
                    f"`{name}`",
                    row["label"],
                    fmt(row["psnr"]),
                    fmt(gain),
                    fmt(row["ssim"], 3),
                    fmt(row["pearson"], 3),
                    _resolution(row, "0.5"),
                    _resolution(row, "0.143"),
                    fmt(steps) if steps else "–",
                    f"{row.get('noise_s', 0):.1f} / {row.get('fit_s', 0):.0f} / "
                    f"{row.get('infer_s', 0):.1f}",
                    f"{total:.0f}",
                    rss_cell,
                    "; ".join(notes),
                ]
            )
        lines.append(
            markdown_table(
                [
                    "id",
                    "method",
                    "PSNR dB",
                    "Δ noisy",
                    "SSIM",
                    "r",
                    "FSC 0.5 Å",
                    "FSC 0.143 Å",
                    "steps",
                    "noise / fit / infer s",
                    "total s",
                    "peak RSS MB",
                    "notes",
                ],
                rows,
            )
        )
        nmsg = entry["methods"].get("nmsg", {})
        if nmsg.get("seam"):
            lines += ["", "### Tile seams (NMSG default output)", ""]
            seam_rows = []
            labels = {
                "blended": "tiled, blended (as shipped)",
                "overlap0": "control: tiled, overlap 0 (no blending)",
                "untiled": "control: whole volume in one tile (no seams possible)",
            }
            for key, label in labels.items():
                seam = nmsg["seam"].get(key)
                if not seam:
                    continue
                axes = ", ".join(f"{a}: {v['ratio']:.3f}" for a, v in seam["per_axis"].items())
                seam_rows.append(
                    [
                        label,
                        seam["tile"] if key != "untiled" else "–",
                        seam["overlap"] if key != "untiled" else "–",
                        fmt(seam["ratio"], 3),
                        axes,
                        fmt(seam.get("tiling_rms_over_error_rms"), 3),
                        fmt(seam["psnr"]),
                    ]
                )
            lines.append(
                markdown_table(
                    [
                        "inference",
                        "tile",
                        "overlap",
                        "border / beside error",
                        "per axis",
                        "RMS(tiled − untiled) / RMS error",
                        "PSNR dB",
                    ],
                    seam_rows,
                )
            )
            lines += [
                "",
                "Mean |denoised − target| (affine-fitted) on the two voxel layers at each tile "
                "border inside the volume (planes of the shipped tiling), divided by the mean on "
                "the layers 2–4 voxels beside them. Target ≤ 1.0; the untiled row is the same "
                "ratio where no tiles exist, i.e. what the data alone give at those planes, and "
                "the overlap-0 row shows what an unblended seam looks like. `RMS(tiled − "
                "untiled) / RMS error`: how much tiling changes the output, relative to the "
                "remaining error against the target.",
            ]
        if entry["noise"]:
            lines += ["", "### Noise-model fidelity", ""]
            fid_rows = []
            for kind, res in entry["noise"].items():
                if not res.get("ok"):
                    fid_rows.append([kind, "FAILED", res.get("error", "")[:120]] + [""] * 7)
                    continue
                for ref, table in (
                    ("held-out real patches", res["fidelity_held_out"]),
                    ("TRUE noise (noisy − target)", res["fidelity_true"]),
                ):
                    for model, f in table.items():
                        if ref.startswith("held") and model != kind:
                            continue
                        fid_rows.append(
                            [
                                model,
                                ref,
                                fmt(f["log_psd_error"], 3),
                                fmt(f["hist_error"], 4),
                                fmt(f["variance_ratio"], 3),
                                f"{f['kurtosis']:.3f} ({f['kurtosis_real']:.3f})",
                                f"{f['axial_autocorr']:.3f} ({f['axial_autocorr_real']:.3f})",
                                fmt(f["autocorr_error"], 3),
                                f"{res['noise_s']:.0f}" if model == kind else "–",
                            ]
                        )
            lines.append(
                markdown_table(
                    [
                        "model",
                        "measured against",
                        "log-PSD err",
                        "hist err",
                        "var ratio",
                        "kurtosis (ref)",
                        "axial AC lag 1 (ref)",
                        "AC err",
                        "learn s",
                    ],
                    _dedupe(fid_rows),
                )
            )
            notes = {k: v.get("note") for k, v in entry["noise"].items() if v.get("ok")}
            lines += [
                "",
                "Errors are 0 for a perfect match: RMS log10 power-spectrum ratio, Wasserstein-1 "
                "histogram distance over the reference std, generated/reference variance, excess "
                "kurtosis, lag-1 autocorrelation along the beam axis, largest autocorrelation "
                "difference (lags 1–3 axial, 1 in plane). `extracted patches` rows measure the "
                "background patches the models are learned from against the true noise. "
                f"Patches: {next(iter(notes.values()), '')}.",
            ]
        figs = entry.get("figures", {})
        if figs:
            lines += ["", "Figures: " + ", ".join(f"[{k}]({v})" for k, v in figs.items()), ""]
            if "slices" in figs:
                lines.append(f"![slices]({figs['slices']})")
    lines.append("")
    return "\n".join(lines)


def _dedupe(rows: list[list[Any]]) -> list[list[Any]]:
    seen, out = set(), []
    for row in rows:
        key = (row[0], row[1])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


# ------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one 96³ case, reduced steps (default)")
    mode.add_argument("--full", action="store_true", help="four 128³ cases, the preset's budget")
    p.add_argument("--cases", help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--methods", help=f"comma-separated, from {', '.join(BY_NAME)}")
    p.add_argument("--preset", default="fast", help="preset under test (default fast)")
    p.add_argument("--steps", type=int, help="training steps of every network (quick: 20)")
    p.add_argument("--gan-steps", type=int, help="GAN noise-model steps (quick: 3)")
    p.add_argument("--curve-points", type=int, help="checkpoints for PSNR vs time (quick: 2)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any NMSGConfig field for all network rows, e.g. --set crop=32",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method-timeout", type=float, help="seconds before a method is killed")
    p.add_argument("--in-process", action="store_true", help="no subprocesses (RSS then shared)")
    p.add_argument("--keep-work", action="store_true", help="keep the volumes of every method")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        return args
    args.full = bool(args.full)
    defaults = FULL if args.full else QUICK
    args.case_list = args.cases.split(",") if args.cases else list(defaults["cases"])
    unknown = [c for c in args.case_list if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    args.methods_given = bool(args.methods)
    if args.steps is None:
        args.steps = defaults.get("steps")
    if args.gan_steps is None:
        args.gan_steps = defaults.get("gan_steps")
    if args.curve_points is None:
        args.curve_points = defaults["curve_points"]
    return args


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        return worker_main(args._worker)
    from napari_nmsg.engine import NMSGConfig

    sets = _parse_sets(args.set)
    base = NMSGConfig.preset(
        args.preset,
        **sets,
        device=args.device,
        seed=args.seed,
        train_steps=args.steps,
        gan_steps=args.gan_steps,
    )
    reference = NMSGConfig.preset(args.preset)
    args.method_list = (
        args.methods.split(",")
        if args.methods
        else default_methods(args.preset, base.noise_model, args.full)
    )
    unknown = [m for m in args.method_list if m not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(BY_NAME)}")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "_t0": time.perf_counter(),
        "mode": "full" if args.full else "quick",
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "preset": args.preset,
        "overrides": sets,
        "budget": {
            "train_steps": base.train_steps,
            "gan_steps": base.gan_steps,
            "batch": base.batch_size,
            "crop": base.crop,
            "lr": base.lr,
            "unet": f"depth {base.unet_depth}, width {base.unet_width}"
            + (", space-to-depth" if base.space_to_depth else ""),
            "preset_train_steps": reference.train_steps,
            "preset_gan_steps": reference.gan_steps,
        },
        "config": base.to_dict(),
        "methods": args.method_list,
        "cases": {},
    }
    if args.threads:
        report["machine"]["torch_threads"] = args.threads
    work = Path(tempfile.mkdtemp(prefix="nmsg-bench-"))
    runner = Runner(args, work)
    log(
        f"methods: {', '.join(args.method_list)}; cases: {', '.join(args.case_list)}; "
        f"{base.train_steps} steps, {base.gan_steps} GAN steps; work folder {work}"
    )
    try:
        for case in args.case_list:
            run_case(case, args, runner, report, base, sets)
    finally:
        write_reports(report, args)
        if args.keep_work:
            log(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [
        f"{case}/{name}"
        for case, entry in report["cases"].items()
        for name, row in entry["methods"].items()
        if not row.get("ok")
    ]
    log(
        f"done in {report['elapsed_s'] / 60:.1f} min; wrote {args.out / 'quality.md'}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
