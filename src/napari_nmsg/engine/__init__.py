"""The NMSG engine: plain numpy in, plain numpy out; no Qt, no napari."""

from .checkpoint import load_model, save_model
from .config import PRESETS, NMSGConfig
from .device import available_devices, resolve_device
from .events import Preview, Progress, run_events
from .model import NMSGModel, NoiseLearning
from .pipeline import (
    RunResult,
    iter_denoise,
    iter_fit_denoiser,
    iter_fit_denoiser_many,
    iter_learn_noise,
    iter_run,
)

__all__ = [
    "PRESETS",
    "NMSGConfig",
    "NMSGModel",
    "NoiseLearning",
    "Preview",
    "Progress",
    "RunResult",
    "available_devices",
    "iter_denoise",
    "iter_fit_denoiser",
    "iter_fit_denoiser_many",
    "iter_learn_noise",
    "iter_run",
    "load_model",
    "resolve_device",
    "run_events",
    "save_model",
]
