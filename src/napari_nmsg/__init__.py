"""napari-nmsg: self-supervised cryo-ET denoising with a learned noise model (NMSG).

Plain functions run a whole step and return its result; the ``iter_*`` variants are event
generators yielding ``Progress`` / ``Preview`` for front ends that show progress.

The public names are imported on first use (PEP 562): napari imports this package to list
plugins and to open files, and the engine imports torch, which takes seconds.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__

# public name -> the module that defines it
_LAZY = {
    "PRESETS": ".engine",
    "BatchSummary": ".batch",
    "NMSGConfig": ".engine",
    "NMSGModel": ".engine",
    "NoiseLearning": ".engine",
    "Preview": ".engine",
    "Progress": ".engine",
    "RunResult": ".engine",
    "available_devices": ".engine",
    "denoise": "._api",
    "denoise_file": "._api",
    "denoise_many": ".batch",
    "fit_denoiser": "._api",
    "iter_denoise": ".engine",
    "iter_fit_denoiser": ".engine",
    "iter_learn_noise": ".engine",
    "iter_run": ".engine",
    "learn_noise": "._api",
    "load_model": ".engine",
    "save_model": ".engine",
}

__all__ = ["__version__", *_LAZY]
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
