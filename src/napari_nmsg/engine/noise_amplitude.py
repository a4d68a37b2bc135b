"""Where the noise is stronger or weaker: a coarse map of local noise amplitude.

WBP noise is not equally strong everywhere (fewer tilts reach the edges of a reconstruction).
Recorrupted pairs need the added noise as strong as the real noise *where it is added*, so the
model's stationary noise is scaled by ``sqrt(local high-pass energy of the volume / that of
the model's noise)``. Cryo-ET signal is band-limited, so the high-pass energy is noise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from .fill import grow
from .noise_model import SpectralNoise
from .volume import NormalisedVolume

BIN = 4
_SLAB = 32


def _highpass_energy(block: np.ndarray) -> np.ndarray:
    high = block - ndimage.gaussian_filter(block, 1.0)
    return high * high


def _binned_mean(block: np.ndarray) -> np.ndarray:
    z, y, x = (s // BIN for s in block.shape)
    block = block[: z * BIN, : y * BIN, : x * BIN]
    return block.reshape(z, BIN, y, BIN, x, BIN).mean(axis=(1, 3, 5))


def local_noise_amplitude(
    source: NormalisedVolume, noise_model: SpectralNoise, generator: torch.Generator
) -> np.ndarray:
    """Coarse (binned by ``BIN``) amplitude factors for the model noise, clipped to [0.5, 2]."""
    depth = source.shape[0]
    margin = 4
    rows, weights = [], []
    for start in range(0, depth - depth % BIN, _SLAB):
        stop = min(start + _SLAB, depth - depth % BIN)
        lo, hi = max(0, start - margin), min(depth, stop + margin)
        region = (slice(lo, hi), slice(None), slice(None))
        energy = _highpass_energy(source.read(region))
        own = slice(start - lo, start - lo + stop - start)
        fill = source.fill_mask(region)
        if fill is not None:  # fill, and the voxels whose high-pass reaches it, hold no noise
            data = ~grow(fill, 2)
            energy *= data
            weights.append(_binned_mean(data[own].astype(np.float32)))
        rows.append(_binned_mean(energy[own]))
    volume_energy = ndimage.gaussian_filter(np.concatenate(rows), 2.0)
    if weights:  # normalised convolution: fill bins take the energy of the data around them
        weight = ndimage.gaussian_filter(np.concatenate(weights), 2.0)
        seen = weight > 0.01
        volume_energy = np.where(seen, volume_energy / np.maximum(weight, 0.01), 0.0)
        volume_energy[~seen] = np.median(volume_energy[seen])  # far inside the fill
    with torch.no_grad():
        sample = noise_model.sample(1, (48, 48, 48), generator)[0, 0].cpu().numpy()
    model_energy = float(_highpass_energy(sample)[4:-4, 4:-4, 4:-4].mean())
    return np.sqrt(np.clip(volume_energy / model_energy, 0.25, 4.0)).astype(np.float32)


class AmplitudeSource:
    """The coarse map read at full resolution (nearest neighbour), aligned with the volume."""

    def __init__(self, coarse: np.ndarray, shape: tuple[int, int, int]):
        self.coarse = coarse
        self.shape = shape

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        index = [
            np.minimum(np.arange(r.start, r.stop) // BIN, n - 1)
            for r, n in zip(region, self.coarse.shape, strict=True)
        ]
        return self.coarse[np.ix_(*index)]
