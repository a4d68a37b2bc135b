"""Quality figures against a known ground truth (simulations, tests and benchmarks only)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def affine_fit(estimate: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a·estimate + b`` closest to ``target`` in least squares (removes scale/offset bias)."""
    x = estimate.astype(np.float64).ravel()
    t = target.astype(np.float64).ravel()
    a, b = np.polyfit(x, t, 1) if x.std() > 0 else (0.0, t.mean())
    return (a * estimate.astype(np.float64) + b).astype(np.float32)


def psnr(estimate: np.ndarray, target: np.ndarray, *, fit: bool = True) -> float:
    """PSNR in dB over the target's dynamic range, after an affine intensity fit."""
    est = affine_fit(estimate, target) if fit else estimate
    mse = float(np.mean((est.astype(np.float64) - target) ** 2))
    peak = float(target.max() - target.min())
    return float(10 * np.log10(peak**2 / mse))


def pearson(estimate: np.ndarray, target: np.ndarray) -> float:
    return float(np.corrcoef(estimate.ravel(), target.ravel())[0, 1])


def best_gaussian(
    noisy: np.ndarray, target: np.ndarray, sigmas: np.ndarray | None = None
) -> tuple[float, float, np.ndarray]:
    """(PSNR, σ, filtered) of the Gaussian filter whose σ is best *given the ground truth*."""
    sigmas = np.arange(0.5, 3.01, 0.125) if sigmas is None else sigmas
    best = (-np.inf, 0.0, noisy)
    for sigma in sigmas:
        filtered = ndimage.gaussian_filter(noisy.astype(np.float32), float(sigma))
        score = psnr(filtered, target)
        if score > best[0]:
            best = (score, float(sigma), filtered)
    return best
