"""napari-nmsg: self-supervised cryo-ET denoising with a learned noise model (NMSG).

Plain functions run a whole step and return its result; the ``iter_*`` variants are event
generators yielding ``Progress`` / ``Preview`` for front ends that show progress.
"""

from __future__ import annotations

__version__ = "0.1.0"

from collections.abc import Callable
from typing import Any

import numpy as np

from .batch import BatchSummary, denoise_many
from .engine import (
    PRESETS,
    NMSGConfig,
    NMSGModel,
    NoiseLearning,
    Preview,
    Progress,
    available_devices,
    iter_denoise,
    iter_fit_denoiser,
    iter_learn_noise,
    load_model,
    run_events,
    save_model,
)

EventCallback = Callable[[Progress | Preview], Any] | None


def learn_noise(
    volume: np.ndarray, config: NMSGConfig | None = None, on_event: EventCallback = None
) -> NoiseLearning:
    """Fit a noise model to the signal-free regions of ``volume`` (Z, Y, X)."""
    return run_events(iter_learn_noise(volume, config or NMSGConfig()), on_event)


def fit_denoiser(
    volume: np.ndarray,
    config: NMSGConfig | None = None,
    noise: NoiseLearning | None = None,
    on_event: EventCallback = None,
) -> NMSGModel:
    """Learn the noise (unless ``noise`` is given) and fit the denoiser to ``volume``."""
    return run_events(iter_fit_denoiser(volume, config or NMSGConfig(), noise), on_event)


def denoise(
    volume: np.ndarray,
    model: NMSGModel | None = None,
    config: NMSGConfig | None = None,
    on_event: EventCallback = None,
) -> np.ndarray:
    """Denoise ``volume``; without a ``model`` one is fitted to the volume itself first."""
    config = config or (model.config if model else NMSGConfig())
    if model is None:
        model = fit_denoiser(volume, config, on_event=on_event)
    return run_events(iter_denoise(volume, model, config=config), on_event)


__all__ = [
    "PRESETS",
    "BatchSummary",
    "NMSGConfig",
    "NMSGModel",
    "NoiseLearning",
    "Preview",
    "Progress",
    "__version__",
    "available_devices",
    "denoise",
    "denoise_many",
    "fit_denoiser",
    "iter_denoise",
    "iter_fit_denoiser",
    "iter_learn_noise",
    "learn_noise",
    "load_model",
    "save_model",
]
