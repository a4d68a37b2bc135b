"""When a dock widget is gone for good: closed, or taken out of its dock."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


class CloseWatcher(QObject):
    """Calls ``on_close`` when ``widget`` is closed or removed from the dock it was in.

    napari's dock close button takes the widget out of its dock without closing it, so a
    widget that was docked and then loses its parent is gone too. ``on_close`` may be
    called more than once (e.g. removed, then closed) and must ignore the later calls.
    """

    def __init__(self, widget: QWidget, on_close: Callable[[], None]):
        super().__init__(widget)
        self._on_close = on_close
        self._docked = widget.parent() is not None
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Close:
            self._on_close()
        elif kind == QEvent.Type.ParentChange:
            if watched.parent() is not None:
                self._docked = True
            elif self._docked:
                self._on_close()
        return False  # only watching: the widget still gets every event
