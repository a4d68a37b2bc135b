"""The layer pickers (*Tomogram*, *Background*): the viewer's layers of one kind, kept in
sync with its layer list."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QWidget

from ._compare import same_layer
from ._layers import is_volume_layer, layer_by_id

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Layer


class _Following:
    """Plain flag readable from napari callbacks even after the Qt object is gone."""

    def __init__(self) -> None:
        self.on = True

    def stop(self, *_: Any) -> None:
        self.on = False


class LayerPicker(QComboBox):
    """Layers that ``accepts`` (default: those the plugin can denoise, :func:`is_volume_layer`),
    top first like napari's list.

    The chosen layer stays chosen when layers are added, removed, renamed or reordered;
    with none chosen, the active layer is picked if it is visible, else the top visible one.
    With ``none_label``, that item comes first and stands for no layer: it is what is
    chosen until the user picks a layer (an optional input is never guessed).

    Signals: ``layer_changed()`` after the choice may have changed (user or refresh);
    ``layer_removed(layer)`` when any layer left the viewer, before the list drops it, so
    its owner can stop work on it first.

    A plain QComboBox rather than magicgui's napari layer combo box
    (``create_widget(annotation=napari.layers.Image)`` with ``get_layers`` choices): on
    reset, magicgui keeps the items it already lists in place and appends new names, so the
    list would not follow the layer list's order and a renamed layer would move to the
    end; it replaces a lost choice with the first item rather than the active visible
    layer; and ``get_layers`` finds its viewer through the Qt parents, falling back to
    ``current_viewer()``, which may be another viewer before the widget is docked.
    """

    layer_changed = Signal()
    layer_removed = Signal(object)

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        parent: QWidget | None = None,
        *,
        accepts: Callable[[Any], bool] = is_volume_layer,
        none_label: str | None = None,
        tooltip: str = "3D image layers (single channel)",
    ):
        super().__init__(parent)
        self._viewer = viewer
        self._accepts, self._none_label = accepts, none_label
        self._following = _Following()
        self.destroyed.connect(self._following.stop)
        self.setToolTip(tooltip)
        self.currentIndexChanged.connect(self.layer_changed)
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._on_removed)
        events.reordered.connect(self.refresh)
        # per-layer name events: LayerList's own ``renamed`` event is newer than napari 0.5
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def selected(self) -> Image | None:
        """The chosen layer (``None`` if there is none)."""
        layer = layer_by_id(self._viewer, self.currentData())  # by id: names change
        return layer if layer is not None and self._accepts(layer) else None

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the choice (see the class docstring)."""
        if not self._following.on:
            return
        current = self.selected()
        layers = [x for x in self._viewer.layers if self._accepts(x)][::-1]
        if current is None and layers and self._none_label is None:
            active = self._viewer.layers.selection.active
            shown = [x for x in layers if x.visible]
            current = next((x for x in shown if same_layer(x, active)), (shown or layers)[0])
        self.blockSignals(True)
        self.clear()
        if self._none_label is not None:
            self.addItem(self._none_label, None)
        for layer in layers:
            self.addItem(layer.name, layer.unique_id)
        if any(same_layer(current, x) for x in layers):
            self.setCurrentText(current.name)
        self.blockSignals(False)
        self.layer_changed.emit()

    def release(self) -> None:
        """Stop following the viewer (the widget is closed)."""
        if not self._following.on:
            return
        self._following.stop()
        events = self._viewer.layers.events
        events.inserted.disconnect(self._on_inserted)
        events.removed.disconnect(self._on_removed)
        events.reordered.disconnect(self.refresh)
        for layer in self._viewer.layers:
            layer.events.name.disconnect(self.refresh)

    def _on_inserted(self, event: Any) -> None:
        if self._following.on:
            event.value.events.name.connect(self.refresh)
            self.refresh()

    def _on_removed(self, event: Any) -> None:
        if not self._following.on:
            return
        layer: Layer = event.value
        layer.events.name.disconnect(self.refresh)
        self.layer_removed.emit(layer)
        self.refresh()
