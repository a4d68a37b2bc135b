"""Where the noise is stronger or weaker: a coarse map of local noise amplitude.

WBP noise is not equally strong everywhere (fewer tilts reach the edges of a reconstruction).
Recorrupted pairs need the added noise as strong as the real noise *where it is added*, so the
model's stationary noise is scaled by ``sqrt(local high-pass energy of the volume / that of
the model's noise)``. Cryo-ET signal is band-limited, so the high-pass energy is noise.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import ndimage

from .fill import grow
from .noise_model import SpectralNoise
from .volume import NormalisedVolume

BIN = 4
_SLAB = 32
_MARGIN = 4  # planes read beyond a slab, for its high-pass
# scipy's filters release the GIL, so slabs are filtered on several threads; each slab in
# flight holds two slab-sized float32 arrays, together bounded by this many bytes
_SLAB_BYTES_IN_FLIGHT = 1 << 30


def _highpass_energy(block: np.ndarray) -> np.ndarray:
    """(block − its Gaussian of σ 1)², computed in the filtered copy: one temporary."""
    high = ndimage.gaussian_filter(block, 1.0)
    np.subtract(block, high, out=high)
    return np.square(high, out=high)


def _binned_mean(block: np.ndarray) -> np.ndarray:
    z, y, x = (s // BIN for s in block.shape)
    block = block[: z * BIN, : y * BIN, : x * BIN]
    return block.reshape(z, BIN, y, BIN, x, BIN).mean(axis=(1, 3, 5))


def local_noise_amplitude(
    source: NormalisedVolume, noise_model: SpectralNoise, generator: torch.Generator
) -> np.ndarray:
    """Coarse (binned by ``BIN``) amplitude factors for the model noise, clipped to [0.5, 2]."""
    end = source.shape[0] - source.shape[0] % BIN
    starts = range(0, end, _SLAB)
    slab_bytes = 4 * (_SLAB + 2 * _MARGIN) * source.shape[1] * source.shape[2]
    workers = min(torch.get_num_threads(), len(starts), _SLAB_BYTES_IN_FLIGHT // (2 * slab_bytes))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        parts = list(pool.map(lambda s: _slab_energy(source, s, min(s + _SLAB, end)), starts))
    rows = [energy for energy, _ in parts]
    weights = [weight for _, weight in parts if weight is not None]
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


def _slab_energy(
    source: NormalisedVolume, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The binned high-pass energy of planes ``[start, stop)``, and where the volume has
    fill, the binned share of data voxels (the weights of a normalised convolution)."""
    lo, hi = max(0, start - _MARGIN), min(source.shape[0], stop + _MARGIN)
    region = (slice(lo, hi), slice(None), slice(None))
    energy = _highpass_energy(source.read(region))
    own = slice(start - lo, stop - lo)
    fill = source.fill_mask(region)
    if fill is None:
        return _binned_mean(energy[own]), None
    data = ~grow(fill, 2)  # fill, and the voxels whose high-pass reaches it, hold no noise
    energy *= data
    return _binned_mean(energy[own]), _binned_mean(data[own].astype(np.float32))


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
