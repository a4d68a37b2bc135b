"""Compare: two layers side by side in napari's grid mode, and back exactly as before.

One job: remember what it changes (grid, camera, every layer's visibility), show only the
raw layer (left) and its denoised result (right), and restore it all when switched off.
:class:`Comparison` is the on / off switch the widget holds, one comparison at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError


def same_layer(a: Any, b: Any) -> bool:
    """Whether two layer handles are the same layer.

    napari hands plugin widgets a proxied viewer, so one layer can arrive as different
    Python objects (proxy or not); ``unique_id`` identifies it.
    """
    return a is not None and b is not None and a.unique_id == b.unique_id


def viewer_grid(viewer: Any) -> Any:
    """``viewer.canvas.grid`` (napari >= 0.9) or the older ``viewer.grid``."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


@dataclass
class SideBySide:
    """An active comparison of ``left`` and ``right``; :meth:`restore` undoes it."""

    viewer: Any
    left: Any
    right: Any
    _grid: tuple[bool, int, tuple[int, int]] = (False, 1, (-1, -1))
    _camera: tuple[Any, float] = ((0.0, 0.0), 1.0)
    _visible: list[tuple[Any, bool]] = field(default_factory=list)

    @classmethod
    def show(cls, viewer: Any, left: Any, right: Any) -> SideBySide:
        """Switch the viewer to a 1 x 2 grid with only ``left`` and ``right`` visible."""
        grid, camera = viewer_grid(viewer), viewer.camera
        state = cls(
            viewer,
            left,
            right,
            (grid.enabled, grid.stride, tuple(grid.shape)),
            (tuple(camera.center), camera.zoom),
            [(layer.unique_id, layer.visible) for layer in viewer.layers],
        )
        for layer in viewer.layers:
            layer.visible = same_layer(layer, left) or same_layer(layer, right)
        # Grid cells follow the layer list from the bottom (index 0) with stride 1 and
        # from the top with -1: pick the one that puts ``left`` on the left.
        ids = [layer.unique_id for layer in viewer.layers]
        grid.stride = 1 if ids.index(left.unique_id) < ids.index(right.unique_id) else -1
        grid.shape = (1, 2)
        grid.enabled = True
        try:  # fit the two compared layers, not e.g. noise mosaics placed beside them
            viewer.reset_view(layers=[left, right])
        except TypeError:  # older napari fits all layers
            viewer.reset_view()
        return state

    def involves(self, layer: Any) -> bool:
        return same_layer(layer, self.left) or same_layer(layer, self.right)

    def restore(self) -> None:
        """Put grid, camera and visibilities back (layers deleted since are skipped)."""
        grid = viewer_grid(self.viewer)
        grid.enabled, grid.stride, grid.shape = self._grid
        self.viewer.camera.center, self.viewer.camera.zoom = self._camera
        by_id = {layer.unique_id: layer for layer in self.viewer.layers}
        for unique_id, visible in self._visible:
            if unique_id in by_id:
                by_id[unique_id].visible = visible


class Comparison:
    """Compare on or off: at most one :class:`SideBySide` at a time."""

    def __init__(self, viewer: Any):
        self._viewer = viewer
        self._shown: SideBySide | None = None

    @property
    def on(self) -> bool:
        return self._shown is not None

    def involves(self, layer: Any) -> bool:
        return self._shown is not None and self._shown.involves(layer)

    def switch(self, enabled: bool | None, left: Any, right: Any) -> bool:
        """Turn on (``left`` beside ``right``), off, or over (``None``); returns whether on.

        ``InputError`` when asked to turn on without both layers.
        """
        if self._shown is not None and not enabled:
            shown, self._shown = self._shown, None
            shown.restore()
        elif self._shown is None and enabled is not False:
            if left is None or right is None:
                raise InputError("denoise a layer first; Compare shows it beside its result.")
            self._shown = SideBySide.show(self._viewer, left, right)
        return self.on
