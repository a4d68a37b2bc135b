"""Small display helpers shared by the reader, the sample data and the widget (no Qt).

These only arrange arrays for viewing: which layers the widget works on, robust contrast
limits, and mosaics of noise patches shown beside a tomogram. No denoising maths here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SAMPLE_VOXELS = 1_000_000
ROLE_KEY = "napari_nmsg_role"  # layer metadata key marking the layers this plugin makes


def display_limits(data: Any, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Percentile contrast limits from a strided sample, so a multi-GB memmap stays on disk.

    Min/max limits make a noisy tomogram look grey; percentiles show its structure.
    """
    shape = np.shape(data)
    stride = max(1, int(np.ceil((np.prod(shape) / _SAMPLE_VOXELS) ** (1 / max(len(shape), 1)))))
    sample = np.asarray(data[(slice(None, None, stride),) * len(shape)], dtype=np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def is_volume_layer(layer: Any) -> bool:
    """A single-channel 3D image layer that the plugin can denoise (a multiscale one at
    its full resolution, see :func:`volume_of`)."""
    from napari.layers import Image

    return (
        isinstance(layer, Image)
        and layer.ndim == 3
        and not layer.rgb
        and not str(layer.metadata.get(ROLE_KEY, "")).startswith("noise")
    )


def is_background_layer(layer: Any) -> bool:
    """A 3D Labels layer: painted over ice or vacuum, it says where the noise is learned."""
    from napari.layers import Labels

    return isinstance(layer, Labels) and layer.ndim == 3


def volume_of(layer: Any) -> Any:
    """The full-resolution array of a volume layer: level 0 of a multiscale one (as
    napari-ome-zarr opens OME-Zarr pyramids), read lazily like any array."""
    return layer.data[0] if layer.multiscale else layer.data


def layer_by_id(viewer: Any, unique_id: Any) -> Any:
    """The viewer's layer with this ``unique_id`` (``None`` once it was deleted)."""
    if unique_id is None:
        return None
    return next((x for x in viewer.layers if x.unique_id == unique_id), None)


def noise_mosaic(patches: np.ndarray, wedge_axis: int, count: int = 8, gap: int = 2) -> np.ndarray:
    """The first ``count`` patches ``(N, p, p, p)`` side by side along X, as one volume.

    Patches come in the engine's canonical (wedge-axis-first) orientation; they are turned
    back to the input's axes so they look like the tomogram they came from.
    """
    patches = np.asarray(patches[:count], dtype=np.float32)
    patches = np.moveaxis(patches, 1, 1 + wedge_axis)
    n, pz, py, px = patches.shape
    mosaic = np.zeros((pz, py, n * px + (n - 1) * gap), dtype=np.float32)
    for i, patch in enumerate(patches):
        start = i * (px + gap)
        mosaic[:, :, start : start + px] = patch
    return mosaic


def show_noise_layers(viewer: Any, layer: Any, learning: Any, gap: int = 8) -> list[Any]:
    """Add (or update) ``<name> noise (real)`` and ``<name> noise (generated)`` layers.

    Both are mosaics of the first patches (see :func:`noise_mosaic`) with the same contrast
    limits, placed to the right of ``layer`` (real above generated) at its voxel size.
    """
    axis = learning.normalisation.wedge_axis
    real = noise_mosaic(learning.real_examples, axis)
    generated = noise_mosaic(learning.generated_examples, axis)
    spread = 3 * float(np.std(real)) or 1.0
    scale = np.asarray(layer.scale, dtype=float)
    origin = np.asarray(layer.translate, dtype=float)
    nz, _, nx = volume_of(layer).shape
    shown = []
    for row, (kind, mosaic) in enumerate((("real", real), ("generated", generated))):
        offset = np.array([max(0, (nz - real.shape[0]) // 2), row * (real.shape[1] + 4), nx + gap])
        name = f"{layer.name} noise ({kind})"
        settings = {
            "scale": tuple(scale),
            "translate": tuple(origin + offset * scale),
            "contrast_limits": (-spread, spread),
            "metadata": {ROLE_KEY: f"noise-{kind}", "napari_nmsg_input": layer.name},
        }
        if name in viewer.layers:
            existing = viewer.layers[name]
            existing.data = mosaic
            for key, value in settings.items():
                setattr(existing, key, value)
            shown.append(existing)
        else:
            shown.append(viewer.add_image(mosaic, name=name, colormap="gray", **settings))
    return shown
