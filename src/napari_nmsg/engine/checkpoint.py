"""Save and load fitted models as plain tensors + JSON text (safe with ``weights_only``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .._version import __version__
from ..errors import InputError, OutputError
from ..io import MODEL_SUFFIXES, atomic_path, check_output_path
from .config import NMSGConfig
from .model import NMSGModel
from .noise_model import build_noise_model
from .unet import AveragedUNets, denoiser_from_args
from .validation import QualityEstimate
from .volume import Normalisation

FORMAT = "napari-nmsg-model"
# Version 2 holds several averaged networks; a file of one network stays version 1, which
# readers from before version 2 read too
FORMAT_VERSION = 2


def save_model(model: NMSGModel, path: str | os.PathLike) -> Path:
    """Write ``model`` atomically; the file holds only tensors, numbers and strings."""
    path = check_output_path(path, suffixes=MODEL_SUFFIXES)
    meta = {
        "config": model.config.to_dict(),
        "normalisation": model.normalisation.to_dict(),
        "fidelity": model.fidelity,
        "noise_kind": model.noise_model.kind,
        "noise_args": model.noise_model.init_args(),
        "unet_args": model.denoiser.init_args(),
        "quality": model.quality.to_dict() if model.quality else None,
        "package_version": __version__,
    }
    payload = {
        "format": FORMAT,
        "format_version": 2 if isinstance(model.denoiser, AveragedUNets) else 1,
        "meta": json.dumps(meta),
        "noise_model": {k: v.cpu() for k, v in model.noise_model.state_dict().items()},
        "denoiser": {k: v.cpu() for k, v in model.denoiser.state_dict().items()},
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write model {path}: {exc.strerror or exc}") from exc
    return path


def load_model(path: str | os.PathLike) -> NMSGModel:
    """Load a model saved by ``save_model``; anything else is refused with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"cannot read model {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read model {path}: not a napari-nmsg model ({reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"cannot read model {path}: not a napari-nmsg model file")
    if payload.get("format_version") not in range(1, FORMAT_VERSION + 1):
        raise InputError(
            f"model {path} has format version {payload.get('format_version')}, this "
            f"napari-nmsg {__version__} reads versions 1 to {FORMAT_VERSION}; refit the model "
            "or update napari-nmsg"
        )
    meta = json.loads(payload["meta"])
    noise = build_noise_model(meta["noise_kind"], meta["noise_args"])
    noise.load_state_dict(payload["noise_model"])
    net = denoiser_from_args(meta["unet_args"])
    net.load_state_dict(payload["denoiser"])
    return NMSGModel(
        config=NMSGConfig.from_dict(meta["config"]),
        noise_model=noise.eval(),
        denoiser=net.eval(),
        normalisation=Normalisation(**meta["normalisation"]),
        fidelity=meta["fidelity"],
        quality=QualityEstimate(**meta["quality"]) if meta.get("quality") else None,
    )
