"""Worker functions that train: a noise model, NMSG, or the same U-Net as N2N / supervised.

Each runs inside a fresh worker process (see ``_workers.worker_main``), gets the case's
volumes in ``data`` and returns the numbers of its row; output volumes go to files named in
the spec, so that the parent scores them without holding the worker's memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from _common import peak_rss_mb, true_noise_patches


def _config(spec: dict[str, Any]) -> Any:
    from napari_nmsg.engine import NMSGConfig

    return NMSGConfig.from_dict(spec["config"])


def _timed_events(progress_every: float = 0.1) -> Callable[[Any], None]:
    """An ``on_event`` that prints a progress line every ``progress_every`` of each stage."""
    from napari_nmsg.engine import Progress

    start = time.perf_counter()

    def on_event(event: Any) -> None:
        if not isinstance(event, Progress):
            return
        total = max(event.total, 1)
        every = max(1, round(total * progress_every))
        if event.step == total or event.step % every == 0:
            metrics = " ".join(f"{k}={v:.4g}" for k, v in event.metrics.items())
            print(
                f"    {event.stage} {event.step}/{total} {metrics} "
                f"({time.perf_counter() - start:.0f}s)",
                flush=True,
            )

    return on_event


def worker_noise(spec: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Learn one noise model; fidelity against held-out patches AND against the true noise."""
    import torch

    from napari_nmsg.engine import iter_learn_noise, run_events
    from napari_nmsg.engine.noise_model import mean_power_spectrum, noise_fidelity, sample_patches

    config = _config(spec)
    on_event = _timed_events(0.2)
    t0 = time.perf_counter()
    learning = run_events(iter_learn_noise(data["noisy"], config), on_event)
    seconds = time.perf_counter() - t0
    torch.save(learning, spec["noise_out"])

    # the simulator knows the noise: cut patches of it at random positions
    norm = learning.normalisation
    size = learning.patches.patch_size
    rng = np.random.default_rng(config.seed + 1)
    count = max(64, 4 * len(learning.real_examples))
    true_patches = true_noise_patches(data, norm, size, count, rng)
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
        "true_noise_std_normalised": float(((data["noisy"] - data["target"]) / norm.scale).std()),
    }


def _curve_recorder(target: np.ndarray, printer: Callable[[Any], None]) -> dict[str, Any]:
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

    def on_event(event: Any) -> None:
        printer(event)
        if isinstance(event, Progress) and event.stage == "train":
            state["last_t"], state["step"] = time.perf_counter(), event.step
        elif isinstance(event, Preview):
            record(state["step"], event.array, state["last_t"])

    state["record"], state["on_event"] = record, on_event
    return state


def _save_variant(
    spec: dict[str, Any], name: str, volume: np.ndarray, infer_s: float
) -> dict[str, Any]:
    """Another inference of the method's trained network, scored as its own row."""
    path = spec["out"].replace(".npy", f"_{name}.npy")
    np.save(path, volume)
    return {"file": path, "infer_s": infer_s}


def worker_nmsg(spec: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    from napari_nmsg.engine import Progress, iter_denoise, iter_run, run_events

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

    printer = _timed_events()
    curve = _curve_recorder(data["target"], printer)
    fitted = {}

    def on_event(event: Any) -> None:
        curve["on_event"](event)
        if isinstance(event, Progress) and event.stage == "validate":  # the fit's last event
            fitted["at"] = time.perf_counter()

    t0 = time.perf_counter()
    run = run_events(iter_run(noisy, config, noise, preview_position=position), on_event)
    infer_s = time.perf_counter() - fitted["at"]
    fit_s = fitted["at"] - t0 - curve["eval_s"]
    model, out = run.model, run.output
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
    n2n = spec["method"] == "n2n"
    source, goal = ("even", "odd") if n2n else ("noisy", "target")
    pairs = aligned_pairs(
        NormalisedVolume(data[source], norm),
        NormalisedVolume(data[goal], norm),
        config,
        device,
        config.multiple,
        swap=n2n,
    )
    empty_noise = SpectralNoise(torch.zeros(3, 3, 3))

    def wrap(net: Any) -> Any:
        return NMSGModel(config, empty_noise, net, norm)

    points = spec.get("curve_points", 0)
    printer = _timed_events()
    curve = _curve_recorder(data["target"], printer)
    on_checkpoint = None
    if points:
        config = config.replace(preview_every=max(1, config.train_steps // points))

        def on_checkpoint(net: Any) -> tuple[()]:
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
    if n2n:
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
