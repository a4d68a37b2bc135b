"""What the widget remembers between runs, without Qt or napari: the learned noise of one
layer, the current model, which output layer belongs to which input, and the scratch
files behind the output layers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._scratch import ScratchFiles
from .engine import NMSGConfig, NMSGModel, NoiseLearning
from .engine.config import SETTINGS

# Settings that change what Learn noise produces; a cached noise model is reused only if
# all of them (and the layer's data) are unchanged.
NOISE_FIELDS = (
    "seed",
    "wedge_axis",
    *(d.name for d in SETTINGS if d.setting.group == "noise"),
)


@dataclass(frozen=True)
class _LearnedNoise:
    layer_id: Any
    key: tuple
    learning: NoiseLearning


def mask_fingerprint(mask: Any) -> str | None:
    """Which voxels a background mask marks, as a digest: painting changes a Labels
    layer's array in place, so its identity alone would not tell."""
    if mask is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for z in range(0, mask.shape[0], 16):  # a slab at a time: the mask may be lazy or large
        digest.update(np.packbits(np.asarray(mask[z : z + 16]) != 0).tobytes())
    return digest.hexdigest()


def _noise_key(data: Any, config: NMSGConfig, background: str | None) -> tuple:
    return (id(data), tuple(getattr(config, f) for f in NOISE_FIELDS), background)


class Session:
    """Layers are named by their napari ``unique_id``; data by identity (a layer whose
    data was replaced needs its noise learned again)."""

    def __init__(self) -> None:
        self._noise: _LearnedNoise | None = None
        self.model: NMSGModel | None = None
        self.model_source = ""  # where the model came from, in words
        self._outputs: dict[Any, Any] = {}  # input layer id -> its denoised layer's id
        self.scratch = ScratchFiles()  # the memory-mapped files behind output layers

    def remember_noise(
        self,
        layer_id: Any,
        data: Any,
        config: NMSGConfig,
        learning: NoiseLearning,
        background: str | None = None,
    ) -> None:
        """``background``: the ``mask_fingerprint`` of the mask the noise was learned in,
        taken when the run started (the user may paint on while it runs)."""
        self._noise = _LearnedNoise(layer_id, _noise_key(data, config, background), learning)

    def cached_noise(
        self, layer_id: Any, data: Any, config: NMSGConfig, background: str | None = None
    ) -> NoiseLearning | None:
        """The noise learned on this layer's data with these settings in the same marked
        background (its fingerprint; ``None``: found automatically), if any."""
        cached = self._noise
        if cached is None or cached.layer_id != layer_id:
            return None
        key = _noise_key(data, config, background)
        return cached.learning if cached.key == key else None

    @property
    def learned_noise(self) -> NoiseLearning | None:
        return self._noise.learning if self._noise is not None else None

    def set_model(self, model: NMSGModel, source: str) -> None:
        self.model, self.model_source = model, source

    def describe_model(self) -> str:
        if self.model is None:
            return "Model: none"
        c = self.model.config
        nets = f"{c.networks} averaged U-Nets" if c.networks > 1 else "U-Net"
        return (
            f"Model: {self.model_source} · {nets} depth {c.unet_depth}, width {c.unet_width}, "
            f"{c.train_steps} steps, {self.model.noise_model.kind} noise, pairs {c.pairing}"
        )

    def set_output(self, layer_id: Any, output_id: Any) -> None:
        self._outputs[layer_id] = output_id

    def output_of(self, layer_id: Any) -> Any:
        return self._outputs.get(layer_id)

    def forget_layer(self, layer_id: Any) -> None:
        """A layer left the viewer: drop its noise and any output mapping that names it."""
        if self._noise is not None and self._noise.layer_id == layer_id:
            self._noise = None
        self._outputs = {k: v for k, v in self._outputs.items() if layer_id not in (k, v)}
