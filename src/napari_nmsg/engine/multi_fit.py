"""Fit ONE model on several tomograms of a dataset (``nmsg batch --fit-on N``).

The same steps as ``pipeline.iter_fit_denoiser`` on one volume, pooled: every volume is
normalised on its own (median / MAD), noise patches from all of them are pooled before the
noise model is fitted, each volume gets its own local noise-amplitude map, and each training
step draws its crops from one randomly chosen volume. The result is an ordinary
``NMSGModel``: ``iter_denoise`` applies it to any tomogram of the dataset (it re-fits the
intensity normalisation per volume).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from .config import NMSGConfig
from .device import resolve_device
from .events import EventStream, Progress
from .model import NMSGModel, NoiseLearning
from .noise_amplitude import local_noise_amplitude
from .noise_model import (
    SpectralNoise,
    iter_fit_gan,
    noise_fidelity,
    sample_patches,
    spectral_kernel,
)
from .noise_patches import NoisePatches, extract_noise_patches
from .pipeline import prepare_volume
from .train import PairSampler, iter_train, noise_model_pairs
from .volume import NormalisedVolume


def pool_noise_patches(found: Sequence[NoisePatches]) -> NoisePatches:
    """One set of patches from several volumes, cut to the smallest patch size found."""
    size = min(p.patch_size for p in found)
    parts = []
    for p in found:
        lo = (p.patch_size - size) // 2
        part = p.patches[:, lo : lo + size, lo : lo + size, lo : lo + size]
        parts.append(part - part.mean(axis=(1, 2, 3), keepdims=True))
    corners = np.concatenate([p.corners for p in found])
    notes = "; ".join(f"volume {i}: {p.note}" for i, p in enumerate(found))
    return NoisePatches(np.concatenate(parts).astype(np.float32), corners, size, notes)


def mixed_pairs(samplers: Sequence[PairSampler]) -> PairSampler:
    """A pair sampler that picks one volume's sampler at random for every batch."""

    def sample(rng: np.random.Generator, generator: torch.Generator):
        return samplers[int(rng.integers(len(samplers)))](rng, generator)

    return sample


def iter_learn_noise_many(
    sources: Sequence[NormalisedVolume], config: NMSGConfig
) -> EventStream[NoiseLearning]:
    """Pool noise patches from all ``sources`` and fit the configured noise model to them."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    per_volume = max(1, config.max_patches // len(sources))
    found = []
    for i, source in enumerate(sources):
        yield Progress("noise-patches", i, len(sources))
        found.append(extract_noise_patches(source, config.patch_size, per_volume))
    patches = pool_noise_patches(found)
    yield Progress(
        "noise-patches", len(sources), len(sources), {"patches": float(len(patches.patches))}
    )
    train, held_out = patches.split(0.25, rng)
    size = patches.patch_size
    model: SpectralNoise = SpectralNoise(torch.from_numpy(spectral_kernel(train))).to(device)
    fidelity = {
        "spectral": noise_fidelity(
            sample_patches(model, len(held_out) * 4, size, generator), held_out
        )
    }
    if config.noise_model == "gan":
        model, fidelity["gan"] = yield from iter_fit_gan(train, held_out, config, device, generator)
    model.eval()
    return NoiseLearning(
        noise_model=model,
        normalisation=sources[0].normalisation,
        patches=patches,
        fidelity=fidelity,
        real_examples=held_out,
        generated_examples=sample_patches(model, len(held_out), size, generator),
    )


def iter_fit_denoiser_many(
    volumes: Sequence[np.ndarray], config: NMSGConfig
) -> EventStream[NMSGModel]:
    """Learn one noise model and one denoiser from all ``volumes`` (each ``(Z, Y, X)``).

    Volumes may differ in shape; memory-mapped arrays stay on disk (crops are read per step).
    The returned model's ``normalisation`` is the first volume's (informative only).
    """
    if not volumes:
        raise InputError("fitting on several tomograms needs at least one volume")
    sources = [prepare_volume(volume, config) for volume in volumes]
    noise = yield from iter_learn_noise_many(sources, config)
    device = resolve_device(config.device)
    noise_model = noise.noise_model.to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    samplers = []
    for source in sources:  # as iter_fit_denoiser, per volume
        amplitude = None
        if config.local_amplitude:
            amplitude = local_noise_amplitude(source, noise_model, generator)
        samplers.append(
            noise_model_pairs(source, noise_model, config, device, config.multiple, amplitude)
        )
    net = yield from iter_train(mixed_pairs(samplers), config, device)
    return NMSGModel(
        config=config,
        noise_model=noise.noise_model.cpu(),
        denoiser=net.cpu(),
        normalisation=sources[0].normalisation,
        fidelity=noise.fidelity,
    )
