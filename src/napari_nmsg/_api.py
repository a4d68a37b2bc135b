"""The one-call public functions: each runs a whole step and returns its result."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .engine import (
    NMSGConfig,
    NMSGModel,
    NoiseLearning,
    Preview,
    Progress,
    iter_fit_denoiser,
    iter_learn_noise,
    iter_run,
    run_events,
)
from .engine import save_model as _save_model
from .engine.validation import QualityEstimate
from .io import MODEL_SUFFIXES, check_output_path, mrc_output, read_volume

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
    """Denoise ``volume``; without a ``model`` one is fitted to the volume itself first.

    ``config`` gives the fitting settings and the machine to run on; a given ``model``
    denoises with the inference settings it was fitted with.
    """
    return run_events(iter_run(volume, config or NMSGConfig(), model=model), on_event).output


def denoise_file(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    config: NMSGConfig | None = None,
    model: NMSGModel | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    on_event: Callable[[Any], Any] | None = None,
    save_model: str | os.PathLike | None = None,
) -> tuple[dict[str, float], QualityEstimate | None]:
    """Denoise one tomogram file into one MRC file; fit a model to it unless ``model``.

    ``config`` gives the fitting settings (without a ``model``) and the device and tile
    batch to run on. The inference settings are the model's, except those the user set
    explicitly, given as ``overrides`` (``engine.config.inference_settings``). The output
    keeps the input's voxel size and origin and appears atomically (never partial).
    Returns the seconds spent reading, fitting and denoising, and the model's
    self-supervised quality estimate (also written into the MRC labels).
    """
    started = time.perf_counter()
    config = config or NMSGConfig.preset("fast")
    output = check_output_path(output, protect=(input_path,))
    if save_model:
        check_output_path(save_model, protect=(input_path,), suffixes=MODEL_SUFFIXES)
    tomo = read_volume(input_path)
    seconds = {"read": time.perf_counter() - started}
    given = model is not None

    with contextlib.ExitStack() as outputs:

        def output_for(fitted: NMSGModel) -> np.ndarray:
            seconds["fit"] = 0.0 if given else time.perf_counter() - started - seconds["read"]
            if save_model and not given:
                _save_model(fitted, save_model)
            labels = (f"napari-nmsg {__version__}: denoised {Path(input_path).name}",)
            if fitted.quality is not None:
                labels += (quality_label(fitted.quality),)
            file = mrc_output(
                output, tomo.data.shape, tomo.voxel_size, tomo.origin,
                protect=(input_path,), labels=labels,
            )  # fmt: skip
            return outputs.enter_context(file)

        result = run_events(
            iter_run(tomo.data, config, model=model, out=output_for, overrides=overrides),
            on_event,
        )
    seconds["denoise"] = time.perf_counter() - started - seconds["read"] - seconds["fit"]
    return seconds, result.model.quality


def quality_label(quality: QualityEstimate) -> str:
    """The estimate in one MRC label (80 characters at most)."""
    flags = "".join(
        f"; {name}"
        for name, on in (("fell back", quality.fell_back), ("over-smoothed", quality.over_smoothed))
        if on
    )
    return (
        f"nmsg estimate {quality.gain_over_gaussian_db:+.2f} dB vs Gaussian "
        f"sigma {quality.gaussian_sigma:g}{flags}"
    )[:80]
