"""The NMSG engine: plain numpy in, plain numpy out; no Qt, no napari.

Its public names are imported on first use, as the package's are: the command line reads
the settings to build its options, and ``nmsg --help`` need not wait for torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

# public name -> the module that defines it
_LAZY = {
    "PRESETS": ".config",
    "NMSGConfig": ".config",
    "NMSGModel": ".model",
    "NoiseLearning": ".model",
    "Preview": ".events",
    "Progress": ".events",
    "RunResult": ".pipeline",
    "available_devices": ".device",
    "iter_denoise": ".pipeline",
    "iter_fit_denoiser": ".pipeline",
    "iter_fit_denoiser_many": ".pipeline",
    "iter_learn_noise": ".pipeline",
    "iter_run": ".pipeline",
    "load_model": ".checkpoint",
    "resolve_device": ".device",
    "run_events": ".events",
    "save_model": ".checkpoint",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
