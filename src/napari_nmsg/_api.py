"""The one-call public functions: each runs a whole step and returns its result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .engine import (
    NMSGConfig,
    NMSGModel,
    NoiseLearning,
    Preview,
    Progress,
    iter_denoise,
    iter_fit_denoiser,
    iter_learn_noise,
    run_events,
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
