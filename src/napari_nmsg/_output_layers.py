"""Live previews and results: the slice previews are made for, and the ``<name> denoised``
layer a Denoise run writes into (found or made, filled live, finished).

The engine writes tiles straight into a float32 buffer that is the layer's data, a
memory-mapped scratch file (``_scratch``), so the result never needs RAM of its size; this
module only decides when napari redraws it. No maths here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layers import ROLE_KEY, display_limits, layer_by_id, volume_of
from .engine import Preview, Progress

if TYPE_CHECKING:
    from napari.layers import Image

    from ._session import Session

QUALITY_KEY = "napari_nmsg_quality"  # output metadata: the self-supervised quality estimate
REFRESH_S = 0.5  # redraw the output layer at most this often while denoised tiles arrive


class ViewedSlice:
    """The index along axis 0 of a layer that the user looks at: previews are made there.

    The GUI thread writes it as the user moves through the volume; the worker thread only
    reads an int through :meth:`position`.
    """

    def __init__(self, viewer: Any):
        self._viewer = viewer
        self._z: int | None = None

    def follow(self, layer: Image | None) -> None:
        if layer is None:
            self._z = None
            return
        position = layer.world_to_data(self._viewer.dims.point)
        self._z = int(np.clip(round(float(position[0])), 0, volume_of(layer).shape[0] - 1))

    def position(self) -> int | None:
        return self._z


def find_output(viewer: Any, session: Session, layer: Image) -> Image | None:
    """The output made for ``layer`` in this session, else a same-shaped ``<name> denoised``."""
    output = layer_by_id(viewer, session.output_of(layer.unique_id))
    if output is not None:
        return output
    name = f"{layer.name} denoised"
    if name in viewer.layers and viewer.layers[name].data.shape == volume_of(layer).shape:
        return viewer.layers[name]
    return None


@dataclass(eq=False)
class RunOutput:
    """One Denoise run's output layer and the buffer the engine fills (its data)."""

    viewer: Any
    layer: Image
    buffer: np.ndarray
    _refreshed: float = 0.0

    @classmethod
    def prepare(cls, viewer: Any, session: Session, layer: Image) -> RunOutput:
        """A zero-filled output with the input's geometry and metadata, backed by a new
        scratch file (``OutputError`` when the scratch folder has no room for it).

        Reuses an output layer this plugin made for ``layer`` (found as :func:`find_output`
        finds it), else adds one: a user's own layer of that name is never overwritten.
        """
        buffer = session.scratch.new(volume_of(layer).shape, f"{layer.name} denoised")
        metadata = {**layer.metadata, ROLE_KEY: "denoised", "napari_nmsg_input": layer.name}
        output = find_output(viewer, session, layer)
        if output is not None and output.metadata.get(ROLE_KEY) == "denoised":
            previous, output.data = output.data, buffer
            session.scratch.release(previous)
            output.metadata = metadata
        else:
            output = viewer.add_image(
                buffer,
                name=f"{layer.name} denoised",
                scale=layer.scale,
                translate=layer.translate,
                rotate=layer.rotate,
                shear=layer.shear,
                metadata=metadata,
                colormap="gray",
                contrast_limits=tuple(layer.contrast_limits),
            )
        session.set_output(layer.unique_id, output.unique_id)
        return cls(viewer, output, buffer)

    def alive(self) -> bool:
        """Whether the layer is still in the viewer."""
        return layer_by_id(self.viewer, self.layer.unique_id) is not None

    def show(self, event: Any) -> bool:
        """Show an engine event in the layer; ``True`` when it was a preview slab."""
        if isinstance(event, Preview):
            self.buffer[event.region] = event.array
            self._refresh()
            return True
        if isinstance(event, Progress) and event.stage == "denoise":
            now = time.monotonic()
            if now - self._refreshed > REFRESH_S:
                self._refreshed = now
                self._refresh()
        return False

    def finish(self, result: np.ndarray, quality: Any = None) -> None:
        """Show the whole result with robust contrast limits; keep its quality estimate."""
        if not self.alive():
            return
        if self.layer.data is not self.buffer:  # replaced meanwhile: show the result
            self.layer.data = self.buffer
        self.layer.contrast_limits = display_limits(result)
        if quality is not None:
            self.layer.metadata = {**self.layer.metadata, QUALITY_KEY: quality.to_dict()}
        self.layer.refresh()

    def _refresh(self) -> None:
        if self.alive():
            self.layer.refresh()
