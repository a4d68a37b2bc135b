"""Training pairs from one noisy volume and a noise model.

``r2r`` (default, Recorrupted-to-Recorrupted): input ``y + αz``, target ``y − z/α``; for
Gaussian noise the two corruptions are uncorrelated, so this is Noise2Noise from ONE volume
and the network is used as ``f(y)``. ``paper`` (NMSG as published) and ``noisier2noise``
train ``f(y + z) → y``; at inference ``paper`` uses ``f(y)`` (half the noise passes through at
cryo-ET SNR, DESIGN §3) and ``noisier2noise`` the correction ``2 f(y + z) − (y + z)``.
"""

from __future__ import annotations

import torch

from .config import Pairing


def make_pair(
    y: torch.Tensor, z: torch.Tensor, pairing: Pairing, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(network input, target) from noisy crops ``y`` and model noise ``z`` of equal shape."""
    if pairing == "r2r":
        return y + alpha * z, y - z / alpha
    return y + z, y


def noisier2noise_estimate(prediction: torch.Tensor, noisier_input: torch.Tensor) -> torch.Tensor:
    """Noisier2Noise correction: ``E[x] ≈ 2 f(y + z) − (y + z)``."""
    return 2 * prediction - noisier_input
