"""Choose where torch runs: CUDA, then Apple MPS, then CPU, unless the user says otherwise."""

from __future__ import annotations

import torch

from ..errors import InputError


def available_devices() -> list[str]:
    """Device names usable on this machine, best first, always ending with ``cpu``."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the best available device; an unavailable one is a clear error."""
    available = available_devices()
    if name == "auto":
        return torch.device(available[0])
    kind = name.split(":")[0]
    if kind not in available:
        raise InputError(
            f"device {name!r} is not available here; choose one of {['auto', *available]}"
        )
    return torch.device(name)
