"""What the user asks for: preset, device, seed and the *Advanced* form, as an ``NMSGConfig``,
and where the output layers' scratch files go."""

from __future__ import annotations

import os
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ._settings_form import SettingsForm
from .engine import PRESETS, NMSGConfig, available_devices
from .engine.config import DECLARED


class FolderField(QWidget):
    """A folder path the user types or browses to; ``changed(path)`` when it is set."""

    changed = Signal(str)

    def __init__(self, folder: str | os.PathLike, tooltip: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.edit = QLineEdit(os.fspath(folder))
        self.edit.setToolTip(tooltip)
        self.edit.editingFinished.connect(lambda: self.changed.emit(self.edit.text()))
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose a folder")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(browse)

    def set_folder(self, folder: str | os.PathLike) -> None:
        self.edit.setText(os.fspath(folder))
        self.changed.emit(self.edit.text())

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Scratch folder", self.edit.text())
        if chosen:
            self.set_folder(chosen)


class SettingsPanel(QWidget):
    """Preset, device and seed, then the generated Advanced form behind a toggle.

    Choosing a preset shows its values in the Advanced fields; only fields the user edits
    afterwards override the preset (and, when a model is reused, its own settings).
    """

    def __init__(self, scratch_folder: str | os.PathLike, parent: QWidget | None = None):
        super().__init__(parent)
        self.form = form = QFormLayout()  # the widget puts its layer picker on top
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip("fast / balanced / quality: the same network, trained longer")
        self.preset_combo.currentTextChanged.connect(self._apply_preset)
        form.addRow("Preset", self.preset_combo)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.device_combo.setToolTip("auto: CUDA, then Apple MPS, then CPU")
        form.addRow("Device", self.device_combo)
        self.seed_spin = QSpinBox()
        seed = DECLARED["seed"].setting
        self.seed_spin.setRange(int(seed.minimum), int(seed.maximum))
        self.seed_spin.setToolTip("The same seed and settings give the same result")
        form.addRow("Seed", self.seed_spin)

        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        self.advanced = SettingsForm()
        self.scratch_folder = FolderField(
            scratch_folder,
            "Where denoised layers are kept on disk (memory-mapped, deleted with their layer); "
            "a fast local disk with room for the tomogram",
        )
        self.advanced.layout().addRow("Scratch folder", self.scratch_folder)
        self.advanced.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.advanced_toggle)
        layout.addWidget(self.advanced)
        self._apply_preset(self.preset_combo.currentText())

    def given_settings(self) -> dict[str, Any]:
        """Seed, device and the Advanced fields the user changed (see ``inference_settings``)."""
        return {
            "seed": self.seed_spin.value(),
            "device": self.device_combo.currentText(),
            **self.advanced.edited_values(),
        }

    def config(self) -> NMSGConfig:
        """The preset with the user's changes; ``ValueError`` says what is inconsistent."""
        given = self.given_settings()
        config = NMSGConfig.preset(self.preset_combo.currentText(), **given)
        # preset() skips None values, but "auto" wedge axis / precision chosen here count
        return config.replace(**{k: v for k, v in given.items() if v is None})

    def _apply_preset(self, name: str) -> None:
        self.advanced.show_config(NMSGConfig.preset(name))

    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        arrow = Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        self.advanced_toggle.setArrowType(arrow)
