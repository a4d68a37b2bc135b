"""The worker side of the quality benchmark: one method per fresh process.

``run.py --_worker SPEC`` (started by ``_common.run_worker``) calls ``worker_main``, which
loads the case's volumes, runs the worker of the spec's ``kind`` and writes a result JSON.
A fresh process per method makes its peak RSS its own, not a high-water mark left by an
earlier method.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from _common import peak_rss_mb, write_json
from _fit_workers import worker_nmsg, worker_noise, worker_reference


def worker_classical(spec: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Gaussian filter or TV denoising with the parameter that is best against the truth."""
    from scipy import ndimage
    from skimage.restoration import denoise_tv_chambolle

    from napari_nmsg.engine.volume import fit_normalisation
    from napari_nmsg.metrics import best_gaussian, psnr

    noisy, target = data["noisy"], data["target"]
    t0 = time.perf_counter()
    if spec["method"] == "gaussian":
        _, sigma, _ = best_gaussian(noisy, target)
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


WORKERS = {
    "noise": worker_noise,
    "nmsg": worker_nmsg,
    "preset": worker_nmsg,
    "reference": worker_reference,
    "classical": worker_classical,
}


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
        data = {k: np.load(case_dir / f"{k}.npy") for k in ("noisy", "even", "odd", "target")}
        result["baseline_rss_mb"] = peak_rss_mb()
        result.update(WORKERS[spec["kind"]](spec, data))
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
