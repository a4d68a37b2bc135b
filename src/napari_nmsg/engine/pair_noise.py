"""The recorrupting noise of the pairs where the background patches hold signal.

An R2R network learns to denoise the noisier ``y + αz``: for a linear filter, the Wiener
filter for noise ``(1 + α²) N``, which smooths ``y`` more than ``y`` needs where signal and
noise are of similar power. Recorrupting with ``c · N`` per frequency instead, where
``c = P / (P + α² S)`` (``P`` the volume's power, ``S = P − N`` its signal), makes it the
Wiener filter of ``y`` itself: ``c`` is 1 where there is no signal and falls towards
``1 / (1 + α²)`` where signal dominates. Where the patches hold no signal the background
search's low-band deficit already lowers the learned spectrum about that much
(benchmarks/results/pair-noise-shrinkage), so this applies only where the cap did.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from .noise_model import (
    SpectralNoise,
    autocorrelation_power_spectrum,
    frequency_radius,
    kernel_for_spectrum,
    kernel_spectrum,
)

# cycles/voxel: above it the pairs keep the model's noise. Gold beads put signal into
# 0.12-0.25 (the volume's power 1.70x the noise there, 1.03-1.07x on five other cases), and
# shrinking that band cost 0.37 dB there (fast preset, seed 0)
SHRINK_BELOW = 0.12
# Boxes whose variance exceeds their median's this many times hold a rare strong object
# (gold beads) and are left out of the volume's spectrum: they would make
# every bin look signal-rich where most of the volume is not. Over 512 boxes the largest
# ratio was 1.09-1.23 on eight suite cases; gold beads put 6 % of the boxes above 1.5.
OUTLIER_VARIANCE = 1.5


def volume_spectrum(boxes: np.ndarray) -> np.ndarray | None:
    """The power spectrum of ``boxes`` drawn anywhere in the volume (signal and noise, but
    no outliers: ``OUTLIER_VARIANCE``), on the grid of twice their size, the spectral
    model's kernel's; None where no box fits."""
    if not len(boxes):
        return None
    variance = boxes.var(axis=(1, 2, 3))
    return autocorrelation_power_spectrum(boxes[variance <= OUTLIER_VARIANCE * np.median(variance)])


def r2r_shrinkage(volume_power: np.ndarray, noise_power: np.ndarray, alpha: float) -> np.ndarray:
    """``c = P / (P + α² S)`` per bin below ``SHRINK_BELOW`` (1 above), with ``P`` and the
    noise smoothed over 3³ bins and the signal ``S = P − N`` never negative."""
    p = ndimage.uniform_filter(volume_power, 3, mode="wrap")
    n = ndimage.uniform_filter(noise_power, 3, mode="wrap")
    signal_share = np.clip(1 - n / np.maximum(p, 1e-30), 0.0, 1.0)
    shrink = 1 / (1 + alpha**2 * signal_share)
    return np.where(frequency_radius(p.shape[0]) < SHRINK_BELOW, shrink, 1.0)


def shrunk_pairs_noise(
    model: SpectralNoise, volume_power: np.ndarray, mean_square_amplitude: float, alpha: float
) -> SpectralNoise:
    """The spectral ``model`` with its spectrum times ``r2r_shrinkage`` against the volume's
    ``volume_power``; its noise as the pairs add it is the model's times the local
    amplitude, whose mean square over the volume is ``mean_square_amplitude``."""
    model_power = kernel_spectrum(model.kernel.detach().cpu().numpy())
    shrink = r2r_shrinkage(volume_power, model_power * mean_square_amplitude, alpha)
    return SpectralNoise(torch.from_numpy(kernel_for_spectrum(model_power * shrink))).eval()
