"""Training pairs from one noisy volume and a noise model.

``r2r`` (default, Recorrupted-to-Recorrupted): input ``y + αz``, target ``y − z/α``; for
Gaussian noise the two corruptions are uncorrelated, so this is Noise2Noise from ONE volume
and the network is used as ``f(y)``. ``paper`` (NMSG as published) and ``noisier2noise``
train ``f(y + z) → y``; at inference ``paper`` uses ``f(y)`` (half the noise passes through at
cryo-ET SNR, DESIGN §3) and ``noisier2noise`` the correction ``2 f(y + z) − (y + z)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .config import Pairing
from .symmetry import apply_symmetry, inplane_symmetry, undo_symmetry


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


def average_over_pairs(
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    draws: Sequence[torch.Tensor],
    turns: bool,
) -> torch.Tensor:
    """Mean of ``run(x ± z)`` over the noise ``draws`` (antithetic: each pair cancels the
    first-order noise term). Pair k is predicted under the k-th in-plane symmetry, quarter
    turns included where the network trained on them (``turns``), so the network's own
    errors average out too.

    A single window (the validation's, or a lone tile) sends both signs as one batch:
    PyTorch runs a float32 CPU convolution of batch 1 with its slow reference kernel
    instead of oneDNN where batch × channels × depth × height is at most 20480, which made
    a 64 × 32 × 128 window 4× slower per voxel than a 96 × 32 × 128 one. Batches of tiles
    go one sign at a time: doubling them made 128³ inference 5-55 % slower on a 2-core CPU."""
    turns = turns and x.shape[-1] == x.shape[-2]
    total = torch.zeros_like(x)
    for k, z in enumerate(draws):
        symmetry = inplane_symmetry(k, turns)
        signs = [torch.cat([x + z, x - z])] if len(x) == 1 else [x + z, x - z]
        for noisier in signs:
            out = undo_symmetry(run(apply_symmetry(noisier, *symmetry)), *symmetry)
            total += out.reshape(-1, *x.shape).sum(0)
    return total / (2 * len(draws))
