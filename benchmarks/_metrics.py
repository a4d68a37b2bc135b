"""Scores of the quality benchmark, computed in the main process from the saved outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from _common import fsc_curve, fsc_resolution


def quality_metrics(estimate: np.ndarray, target: np.ndarray, voxel: float) -> dict[str, Any]:
    """PSNR, SSIM, Pearson r and FSC resolutions of one output against the target."""
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


def seam_check(
    estimate: np.ndarray, target: np.ndarray, tile: int, overlap: int, multiple: int, axis: int
) -> dict[str, Any]:
    """Error at tile borders vs just beside them, for the tiling the engine used.

    For every tile border plane inside the volume (the start or end of a tile) the mean
    ``|estimate − target|`` on the two voxel layers at the border is compared with the mean
    on layers 2–4 voxels away on either side, so slow trends (specimen slab vs empty ice)
    cancel. A ratio of about 1 means no seam; above 1, borders are worse.
    """
    from napari_nmsg.engine.tiling import tile_grid
    from napari_nmsg.metrics import affine_fit

    error = np.abs(affine_fit(estimate, target) - target)
    error = np.moveaxis(error, axis, 0)
    grid = tile_grid(error.shape, tile, overlap, multiple)
    border_sum = beside_sum = 0.0
    border_n = beside_n = 0
    per_axis = {}
    for ax, (length, axis) in enumerate(zip(error.shape, grid, strict=True)):
        size, starts = axis.size, axis.starts
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
