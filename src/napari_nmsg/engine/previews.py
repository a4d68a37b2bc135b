"""Preview slabs during training: the current network applied around the slice the user
is looking at, so the widget shows the denoising improve while it trains."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from .config import NMSGConfig
from .events import Event, Preview
from .model import NMSGModel
from .noise_model import SpectralNoise
from .predictor import make_predictor
from .tiling import Window, iter_predict_tiled
from .unet import UNet3D
from .volume import NormalisedVolume

PreviewPosition = Callable[[], int | None]


def slab_region(
    position: int, source: NormalisedVolume, config: NMSGConfig, multiple: int
) -> tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]:
    """(original-axes region shown, canonical window read with context, crop inside it)."""
    shape_original = source.raw.shape
    half = config.preview_depth // 2
    centre = int(np.clip(position, 0, shape_original[0] - 1))
    lo, hi = max(0, centre - half), min(shape_original[0], centre + half)
    shown = (slice(lo, hi), slice(0, shape_original[1]), slice(0, shape_original[2]))
    axis = source.normalisation.wedge_axis
    order = [axis] + [a for a in range(3) if a != axis]
    canonical = tuple(shown[a] for a in order)
    context = 2 * multiple
    window = tuple(
        slice(max(0, r.start - context), min(n, r.stop + context))
        for r, n in zip(canonical, source.shape, strict=True)
    )
    inner = tuple(
        slice(r.start - w.start, r.stop - w.start) for r, w in zip(canonical, window, strict=True)
    )
    return shown, window, inner


def iter_previews(
    net: UNet3D,
    model_parts: tuple[SpectralNoise, NMSGConfig],
    source: NormalisedVolume,
    device: torch.device,
    where: PreviewPosition,
) -> Iterator[Event]:
    """One ``Preview`` of the slab at ``where()``, or nothing when no slice is shown."""
    position = where()
    if position is None:
        return
    noise, config = model_parts
    shown, window, inner = slab_region(position, source, config, net.multiple)
    preview_model = NMSGModel(config, noise, net, source.normalisation)
    block = np.zeros(tuple(w.stop - w.start for w in window), dtype=np.float32)

    def write(z: slice, values: np.ndarray) -> None:
        block[z] = values

    for _ in iter_predict_tiled(
        make_predictor(preview_model, device),
        Window(source, window),
        write,
        tile=config.tile,
        overlap=config.overlap,
        batch=config.tile_batch,
        multiple=net.multiple,
        device=device,
    ):
        pass
    canonical = source.to_raw_scale(block[inner])
    yield Preview(shown, np.moveaxis(canonical, 0, source.normalisation.wedge_axis))
