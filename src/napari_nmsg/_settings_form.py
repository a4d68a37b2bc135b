"""The widget's *Advanced* form, generated from the settings declared on ``NMSGConfig``."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

from .engine import NMSGConfig
from .engine.config import SETTINGS
from .engine.settings import Declared

FORM_SETTINGS = tuple(d for d in SETTINGS if d.setting.widget)


def _make_field(declared: Declared) -> QWidget:
    setting = declared.setting
    if setting.choices:
        combo = QComboBox()
        combo.addItems(list(setting.choices))
        return combo
    if declared.kind is bool:
        return QCheckBox()
    box: QSpinBox | QDoubleSpinBox = QSpinBox() if declared.kind is int else QDoubleSpinBox()
    if isinstance(box, QDoubleSpinBox):
        box.setDecimals(3)
    lowest = setting.minimum
    if declared.optional:  # one step below the range stands for None, shown as its meaning
        lowest -= setting.step
        box.setSpecialValueText(setting.auto)
    box.setRange(lowest, setting.maximum)
    box.setSingleStep(setting.step)
    if setting.unit:
        box.setSuffix(f" {setting.unit}")
    return box


class SettingsForm(QWidget):
    """One field per declared setting. Shows a preset (``show``) and reports only the
    fields the user changed since (``edited_values``): those override the preset's or a
    reused model's values and its rules, e.g. a saved model's own inference pairs."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(12, 0, 0, 0)
        self.fields: dict[str, QWidget] = {}
        self._edited: set[str] = set()
        self._filling = False  # a preset is being shown: field changes are not the user's
        for declared in FORM_SETTINGS:
            widget = _make_field(declared)
            widget.setToolTip(declared.setting.help)
            self._on_change(widget).connect(lambda *_, n=declared.name: self._field_edited(n))
            self.fields[declared.name] = widget
            form.addRow(declared.setting.label, widget)

    @staticmethod
    def _on_change(widget: QWidget):
        if isinstance(widget, QComboBox):
            return widget.currentTextChanged
        if isinstance(widget, QCheckBox):
            return widget.toggled
        return widget.valueChanged

    def _field_edited(self, name: str) -> None:
        if not self._filling:
            self._edited.add(name)

    def show_config(self, config: NMSGConfig) -> None:
        """Show ``config``'s values; none of them counts as edited."""
        self._edited.clear()
        self._filling = True
        try:
            for declared in FORM_SETTINGS:
                self._set(declared, getattr(config, declared.name))
        finally:
            self._filling = False

    def _set(self, declared: Declared, value: Any) -> None:
        widget, setting = self.fields[declared.name], declared.setting
        if setting.choices:
            widget.setCurrentText(next(k for k, v in setting.choices.items() if v == value))
        elif isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif value is None:
            widget.setValue(widget.minimum())
        else:
            widget.setValue(value)

    def _get(self, declared: Declared) -> Any:
        widget, setting = self.fields[declared.name], declared.setting
        if setting.choices:
            return setting.choices[widget.currentText()]
        if isinstance(widget, QCheckBox):
            return widget.isChecked()
        if declared.optional and widget.value() == widget.minimum():
            return None
        return widget.value()

    def edited_values(self) -> dict[str, Any]:
        """The fields the user changed since the last ``show_config``."""
        return {d.name: self._get(d) for d in FORM_SETTINGS if d.name in self._edited}
