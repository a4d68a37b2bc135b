"""The widget's action buttons and *Reuse model*, and when each of them may be used."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QGridLayout, QPushButton, QVBoxLayout, QWidget


def _button(text: str, tip: str, checkable: bool = False) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    button.setCheckable(checkable)
    return button


class ActionButtons(QWidget):
    """Learn noise, Denoise, Save / Load model, Compare, and the *Reuse model* box.

    Only layout and enabled state: the widget connects the buttons to its actions.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.learn_button = _button("Learn noise", "Fit a noise model to flat background regions")
        self.denoise_button = _button(
            "Denoise", "Fit the denoiser (previews stream in), then denoise"
        )
        self.save_button = _button("Save model…", "Save the fitted or loaded model")
        self.load_button = _button("Load model…", "Load a saved model to denoise without training")
        self.compare_button = _button(
            "Compare", "Raw and denoised side by side (grid mode)", checkable=True
        )
        self.reuse_check = QCheckBox("Reuse model (skip training)")
        self.reuse_check.setToolTip("Denoise with the fitted or loaded model, without training")
        grid = QGridLayout()
        grid.addWidget(self.learn_button, 0, 0)
        grid.addWidget(self.denoise_button, 0, 1)
        grid.addWidget(self.save_button, 1, 0)
        grid.addWidget(self.load_button, 1, 1)
        grid.addWidget(self.compare_button, 2, 0, 1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(grid)
        layout.addWidget(self.reuse_check)

    def update_state(
        self, *, idle: bool, has_layer: bool, has_model: bool, can_compare: bool
    ) -> None:
        """Runs start only when idle on a layer; models move only while nothing runs."""
        self.learn_button.setEnabled(idle and has_layer)
        self.denoise_button.setEnabled(idle and has_layer)
        self.save_button.setEnabled(idle and has_model)
        self.load_button.setEnabled(idle)
        self.reuse_check.setEnabled(idle and has_model)
        self.compare_button.setEnabled(can_compare)
