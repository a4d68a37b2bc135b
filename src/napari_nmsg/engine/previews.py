"""Preview slabs during training: the current network applied around the slice the user
is looking at, so the widget shows the denoising improve while it trains.

A preview costs as much as denoising its slab, which on a large tomogram is the cost of
many training steps: its in-plane extent is bounded (the centre of the plane), and
previews are skipped while they would take more than a tenth of the training time, however
cheap each one is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .config import NMSGConfig
from .device import tile_batch_for
from .events import Event, Preview
from .model import NMSGModel
from .noise_model import SpectralNoise
from .predictor import make_predictor
from .tiling import Window, iter_predict_tiled
from .unet import Denoiser
from .volume import NormalisedVolume

PreviewPosition = Callable[[], int | None]
PREVIEW_PLANE = 384  # the largest in-plane extent of a preview slab, in voxels
_PREVIEW_SHARE = 0.1  # of the wall time, at most


class PreviewBudget:
    """Whether a preview is due: the first at once, then each when the training since the
    last one took nine times as long as that preview did."""

    def __init__(self) -> None:
        self._cost = 0.0
        self._ended = time.perf_counter()

    def due(self) -> bool:
        waited = time.perf_counter() - self._ended
        return waited >= self._cost * (1 - _PREVIEW_SHARE) / _PREVIEW_SHARE

    def spend(self, events: Iterator[Event]) -> Iterator[Event]:
        """``events`` (one preview), timed."""
        started = time.perf_counter()
        yield from events
        self._ended = time.perf_counter()
        self._cost = self._ended - started


def slab_region(
    position: int, source: NormalisedVolume, config: NMSGConfig, multiple: int
) -> tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]:
    """(original-axes region shown, canonical window read with context, crop inside it):
    ``preview_depth`` slices around ``position``, the central ``PREVIEW_PLANE`` voxels of
    the plane."""
    shape_original = source.raw.shape
    half = config.preview_depth // 2
    centre = int(np.clip(position, 0, shape_original[0] - 1))
    lo, hi = max(0, centre - half), min(shape_original[0], centre + half)
    shown = (slice(lo, hi), *(_central(n, PREVIEW_PLANE) for n in shape_original[1:]))
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


def _central(extent: int, most: int) -> slice:
    start = max(0, (extent - most) // 2)
    return slice(start, min(extent, start + most))


def iter_previews(
    net: Denoiser,
    model_parts: tuple[SpectralNoise, NMSGConfig],
    source: NormalisedVolume,
    device: torch.device,
    where: PreviewPosition,
) -> Iterator[Event]:
    """One ``Preview`` of the slab at ``where()``, or nothing when no slice is shown or the
    GPU has no memory for it beside the training (a preview is never worth the fit)."""
    position = where()
    if position is None:
        return
    noise, config = model_parts
    shown, window, inner = slab_region(position, source, config, net.multiple)
    preview_model = NMSGModel(config, noise, net, source.normalisation)
    block = np.zeros(tuple(w.stop - w.start for w in window), dtype=np.float32)

    def write(z: slice, values: np.ndarray) -> None:
        block[z] = values

    try:
        for _ in iter_predict_tiled(
            make_predictor(preview_model, device),
            Window(source, window),
            write,
            tile=config.tile,
            overlap=config.overlap,
            batch=tile_batch_for(device, config.tile_batch),
            multiple=net.multiple,
            device=device,
        ):
            pass
    except torch.cuda.OutOfMemoryError:
        pass  # the cache is freed below, once the traceback no longer holds the batch
    else:
        canonical = source.to_raw_scale(block[inner])
        yield Preview(shown, np.moveaxis(canonical, 0, source.normalisation.wedge_axis))
        return
    torch.cuda.empty_cache()
