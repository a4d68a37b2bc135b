"""The results of the engine's stages, as plain containers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import NMSGConfig
from .noise_model import SpectralNoise
from .noise_patches import NoisePatches
from .unet import Denoiser
from .validation import QualityEstimate
from .volume import Normalisation


@dataclass
class NoiseLearning:
    """A fitted noise model, the patches it was learned from, and how faithful it is."""

    noise_model: SpectralNoise
    # the spectral fit, also when noise_model is the GAN: it fits the noise's covariance
    # directly, the one property Stein's estimate needs (validation.py)
    spectral_model: SpectralNoise
    # the spectral fit with the low band the background search leaves short filled: the
    # noise of the validation's recorrupted copies (noise_model.fill_selection_deficit)
    validation_model: SpectralNoise
    normalisation: Normalisation
    patches: NoisePatches
    fidelity: dict[str, dict[str, float]]  # per model kind, against held-out real patches
    real_examples: np.ndarray  # held-out real patches, normalised units
    generated_examples: np.ndarray  # generated patches of the same size
    # where the spectrum's separable cap took signal out of the patches: the power spectrum
    # of the volume's boxes (pair_noise.volume_spectrum), which the pairs' noise shrinks by
    volume_power: np.ndarray | None = None


@dataclass
class NMSGModel:
    """Everything needed to denoise: noise model, denoiser, settings and normalisation."""

    config: NMSGConfig
    noise_model: SpectralNoise
    denoiser: Denoiser
    normalisation: Normalisation
    fidelity: dict[str, dict[str, float]] = field(default_factory=dict)
    quality: QualityEstimate | None = None  # the self-supervised estimate, when fitted here
