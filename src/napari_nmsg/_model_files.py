"""The session's model to and from files, with the save / open dialogs when no path is given."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtWidgets import QFileDialog, QWidget

from .engine import load_model, save_model
from .errors import InputError

if TYPE_CHECKING:
    from ._session import Session

MODEL_FILTER = "NMSG model (*.pt *.pth)"
MODEL_SUFFIXES = (".pt", ".pth")


class ModelFiles:
    """Saves and loads ``session.model``; dialogs open over ``parent``.

    Failures raise an ``InputError`` or ``OutputError`` with a one-line message (the widget
    tells the user); ``None`` means the user cancelled the dialog.
    """

    def __init__(self, session: Session, parent: QWidget):
        self._session = session
        self._parent = parent

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the model; ``.pt`` is added to a chosen name without a model suffix."""
        model = self._session.model
        if model is None:
            raise InputError("no model yet; denoise a layer or load a model first.")
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self._parent, "Save NMSG model", "nmsg-model.pt", MODEL_FILTER
            )
            if not path:
                return None
            if Path(path).suffix.lower() not in MODEL_SUFFIXES:
                path = f"{path}.pt"
        return Path(save_model(model, path))

    def load(self, path: str | Path | None = None) -> Path | None:
        """Make the model in ``path`` the session's model; returns where it came from."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self._parent, "Load NMSG model", "", MODEL_FILTER)
            if not path:
                return None
        try:
            model = load_model(path)
        except InputError:
            raise
        except Exception as exc:  # a foreign file can fail in many ways inside torch
            raise InputError(f"cannot read model {path}: {exc}") from exc
        self._session.set_model(model, f"loaded from {Path(path).name}")
        return Path(path)
