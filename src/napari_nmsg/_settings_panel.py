"""What the user asks for: preset, device, seed and the *Advanced* form, as an ``NMSGConfig``."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QSpinBox, QToolButton, QVBoxLayout, QWidget

from ._settings_form import SettingsForm
from .engine import PRESETS, NMSGConfig, available_devices
from .engine.config import DECLARED


class SettingsPanel(QWidget):
    """Preset, device and seed, then the generated Advanced form behind a toggle.

    Choosing a preset shows its values in the Advanced fields; only fields the user edits
    afterwards override the preset (and, when a model is reused, its own settings).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.form = form = QFormLayout()  # the widget puts its layer picker on top
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip("fast / balanced / quality: more steps, wider network")
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
