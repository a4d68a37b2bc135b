"""The *NMSG denoising* dock widget: a thin adapter between napari and the engine.

Every long step runs in a napari thread worker driving an engine generator
(:mod:`._task_worker`); the widget only turns the events it yields into a progress bar,
status text, preview slabs written into the output layer, and layers at the end. There is
no maths here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import notification_manager, show_error, show_info, show_warning
from qtpy.QtCore import QEvent, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ._compare import SideBySide, same_layer
from ._layers import ROLE_KEY, display_limits, is_volume_layer, show_noise_layers
from ._progress import StageClock, format_duration, format_fidelity, format_metrics
from ._session import Session
from ._settings_form import SettingsForm
from ._task_worker import Outcome, Task, TaskRunner
from .engine import (
    PRESETS,
    NMSGConfig,
    NMSGModel,
    NoiseLearning,
    Preview,
    Progress,
    available_devices,
    iter_denoise,
    iter_fit_denoiser,
    iter_learn_noise,
    load_model,
    save_model,
)
from .engine.config import DECLARED, inference_settings
from .errors import InputError, OutputError

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

TASK_LABELS = {"learn": "Learn noise", "denoise": "Denoise"}
USER_ERRORS = (InputError, OutputError, ValueError)
_DENOISE_REFRESH_S = 0.5  # redraw the output layer at most this often while tiles arrive


@dataclass
class _Life:
    """Plain state readable from callbacks even after the Qt object is gone."""

    closed: bool = False
    preview_z: int | None = None  # index along axis 0 the user looks at (GUI thread writes)

    def preview_position(self) -> int | None:
        """Called from the worker thread: only reads an int."""
        return self.preview_z


class NMSGWidget(QWidget):
    """Learn the noise of a tomogram, denoise it with live previews, compare, reuse models.

    Signals (for scripts and tests): ``preview_shown(region)`` after a preview slab was
    written into the output layer; ``run_finished(task, status)`` when a run ends, with
    task ``"learn"`` or ``"denoise"`` and status ``"done"``, ``"cancelled"`` or ``"failed"``.
    """

    preview_shown = Signal(object)
    run_finished = Signal(str, str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._life = _Life()
        self._runner = TaskRunner(self._on_event, self._on_finished)
        self._clock = StageClock()
        self.session = Session()  # the noise cache, model and outputs, without Qt
        self._compare: SideBySide | None = None
        self._last_denoise_refresh = 0.0
        self._was_docked = False
        self.previews_shown = 0  # preview slabs written into an output layer (all runs)
        self._build_ui()
        self._apply_preset(self.preset_combo.currentText())
        self._refresh_layers()
        self._update_preview_z()
        self._connect_viewer()
        runner, life = self._runner, self._life

        def _destroyed(*_):
            life.closed = True
            runner.shutdown()

        self.destroyed.connect(_destroyed)
        self._update_buttons()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("3D image layers (single channel)")
        self.layer_combo.currentIndexChanged.connect(self._on_layer_selected)
        form.addRow("Tomogram", self.layer_combo)
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
        self.settings = QWidget()
        self.settings.setLayout(form)
        layout.addWidget(self.settings)

        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        layout.addWidget(self.advanced_toggle)
        self.advanced = SettingsForm()
        self.fields = self.advanced.fields
        self.advanced.setVisible(False)
        layout.addWidget(self.advanced)

        buttons = QGridLayout()
        self.learn_button = QPushButton("Learn noise")
        self.learn_button.setToolTip("Fit a noise model to flat background regions")
        self.denoise_button = QPushButton("Denoise")
        self.denoise_button.setToolTip("Fit the denoiser (previews stream in), then denoise")
        self.compare_button = QPushButton("Compare")
        self.compare_button.setCheckable(True)
        self.compare_button.setToolTip("Raw and denoised side by side (grid mode)")
        self.cancel_button = QPushButton("Cancel")
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        self.learn_button.clicked.connect(self.learn_noise)
        self.denoise_button.clicked.connect(self.denoise)
        self.compare_button.clicked.connect(self.compare)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(lambda: self.save_model())
        self.load_button.clicked.connect(lambda: self.load_model())
        for i, button in enumerate(
            (
                self.learn_button,
                self.denoise_button,
                self.compare_button,
                self.cancel_button,
                self.save_button,
                self.load_button,
            )
        ):
            buttons.addWidget(button, i // 2, i % 2)
        layout.addLayout(buttons)
        self.reuse_check = QCheckBox("Reuse model (skip training)")
        self.reuse_check.setToolTip("Denoise with the fitted or loaded model, without training")
        layout.addWidget(self.reuse_check)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Idle")
        layout.addWidget(self.progress)
        self.status = self._label("Pick a 3D image layer, then Learn noise or Denoise.")
        self.losses = self._label("")
        self.fidelity = self._label("")
        self.model_info = self._label("Model: none")
        for label in (self.status, self.losses, self.fidelity, self.model_info):
            layout.addWidget(label)

    @staticmethod
    def _label(text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return label

    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        arrow = Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        self.advanced_toggle.setArrowType(arrow)

    def _apply_preset(self, name: str) -> None:
        """Show the preset's values in the Advanced fields (the user may then edit them)."""
        self.advanced.show_config(NMSGConfig.preset(name))

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

    # ------------------------------------------------------------- layers
    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._on_layer_removed)
        events.reordered.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._update_preview_z)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)

    def _disconnect_viewer(self) -> None:
        events = self.viewer.layers.events
        for emitter, callback in (
            (events.inserted, self._on_layer_inserted),
            (events.removed, self._on_layer_removed),
            (events.reordered, self._refresh_layers),
            (self.viewer.dims.events.current_step, self._update_preview_z),
        ):
            emitter.disconnect(callback)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self._refresh_layers)

    def _volume_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if is_volume_layer(layer)]

    def selected_layer(self) -> Image | None:
        """The layer chosen in the picker (``None`` if there is none)."""
        name = self.layer_combo.currentText()
        if name and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            return layer if is_volume_layer(layer) else None
        return None

    def _refresh_layers(self, *_: Any) -> None:
        """Re-list the 3D image layers (top first, as napari's layer list shows them).

        The chosen layer stays chosen; with none chosen yet, the active layer is picked if
        it is visible, else the top visible one.
        """
        if self._life.closed:
            return
        current = self.selected_layer()
        layers = self._volume_layers()[::-1]
        if current is None and layers:
            active = self.viewer.layers.selection.active
            shown = [x for x in layers if x.visible]
            current = next((x for x in shown if same_layer(x, active)), (shown or layers)[0])
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems([layer.name for layer in layers])
        if any(same_layer(current, x) for x in layers):
            self.layer_combo.setCurrentText(current.name)
        self.layer_combo.blockSignals(False)
        self._on_layer_selected()

    def _on_layer_inserted(self, event: Any) -> None:
        if self._life.closed:
            return
        event.value.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    def _on_layer_removed(self, event: Any) -> None:
        if self._life.closed:
            return
        layer = event.value
        layer.events.name.disconnect(self._refresh_layers)
        task = self._runner.task
        if task is not None:
            if same_layer(layer, task.context.get("layer")):
                self._runner.cancel(f"the input layer {layer.name!r} was deleted")
            elif same_layer(layer, task.context.get("output")):
                self._runner.cancel(f"the output layer {layer.name!r} was deleted")
        if self._compare is not None and self._compare.involves(layer):
            self.compare(False)
        self.session.forget_layer(layer.unique_id)
        self._refresh_layers()

    def _on_layer_selected(self, *_: Any) -> None:
        if self._life.closed:
            return
        self._update_preview_z()
        self._update_buttons()

    def _update_preview_z(self, *_: Any) -> None:
        """Keep the index along axis 0 that the user looks at, for live previews."""
        if self._life.closed:
            return
        task = self._runner.task
        layer = task.context.get("layer") if task is not None else self.selected_layer()
        if layer is None:
            self._life.preview_z = None
            return
        position = layer.world_to_data(self.viewer.dims.point)
        self._life.preview_z = int(np.clip(round(float(position[0])), 0, layer.data.shape[0] - 1))

    def output_layer(self, layer: Image | None = None) -> Image | None:
        """The ``<name> denoised`` layer made for ``layer`` (default: the selected one)."""
        layer = layer if layer is not None else self.selected_layer()
        if layer is None:
            return None
        output = self._layer_by_id(self.session.output_of(layer.unique_id))
        if output is not None:
            return output
        name = f"{layer.name} denoised"
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == layer.data.shape:
            return self.viewer.layers[name]
        return None

    def _prepare_output(self, layer: Image) -> tuple[Image, np.ndarray]:
        """A zero-filled float32 output layer with the input's geometry and metadata."""
        buffer = np.zeros(layer.data.shape, dtype=np.float32)
        metadata = {**layer.metadata, ROLE_KEY: "denoised", "napari_nmsg_input": layer.name}
        output = self.output_layer(layer)
        if output is not None and output.metadata.get(ROLE_KEY) == "denoised":
            output.data = buffer
            output.metadata = metadata
        else:
            output = self.viewer.add_image(
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
        self.session.set_output(layer.unique_id, output.unique_id)
        return output, buffer

    def _layer_by_id(self, unique_id: Any) -> Any:
        """The viewer's layer with this ``unique_id`` (``None`` once it was deleted)."""
        if unique_id is None:
            return None
        return next((x for x in self.viewer.layers if x.unique_id == unique_id), None)

    # ---------------------------------------------------------- actions
    @property
    def busy(self) -> bool:
        return self._runner.busy

    @property
    def worker(self):
        """The running ``GeneratorWorker`` (or ``None``): tests wait on its signals."""
        task = self._runner.task
        return task.worker if task is not None else None

    def _start_checks(self) -> tuple[Image, NMSGConfig] | None:
        if self._life.closed or self._runner.busy:
            return None
        layer = self.selected_layer()
        if layer is None:
            show_error("NMSG: choose a 3D image layer first.")
            return None
        try:
            config = self.config()
        except ValueError as exc:
            show_error(f"NMSG settings: {exc}")
            return None
        return layer, config

    def learn_noise(self) -> Any:
        """Start *Learn noise* on the selected layer; returns the worker (``None`` if busy)."""
        checked = self._start_checks()
        if checked is None:
            return None
        layer, config = checked
        data = layer.data
        task = self._runner.start(
            "learn", lambda: iter_learn_noise(data, config), layer=layer, config=config
        )
        self._started(task, f"Learning the noise of {layer.name!r}…")
        return task.worker

    def denoise(self) -> Any:
        """Start *Denoise* on the selected layer; returns the worker (``None`` if busy).

        Learns the noise first unless it is cached for this layer and settings; with
        *Reuse model* checked, the fitted or loaded model denoises without training.
        """
        checked = self._start_checks()
        if checked is None:
            return None
        layer, config = checked
        given = self.given_settings()
        model = self.session.model if self.reuse_check.isChecked() else None
        if self.reuse_check.isChecked() and model is None:
            show_error("NMSG: no model to reuse; untick 'Reuse model' or load one first.")
            return None
        cached = self.session.cached_noise(layer.unique_id, layer.data, config)
        noise = None if model is not None else cached
        data = layer.data
        output, buffer = self._prepare_output(layer)
        where = self._life.preview_position

        def stream():
            learned, fitted = noise, model
            if fitted is None:
                if learned is None:
                    learned = yield from iter_learn_noise(data, config)
                fitted = yield from iter_fit_denoiser(data, config, learned, preview_position=where)
            inference = inference_settings(fitted.config, given)
            result = yield from iter_denoise(data, fitted, out=buffer, config=inference)
            return learned, fitted, result

        task = self._runner.start(
            "denoise",
            stream,
            layer=layer,
            output=output,
            buffer=buffer,
            config=config,
            reused=model is not None,
        )
        how = "with the current model" if model is not None else "fitting the denoiser"
        self._started(task, f"Denoising {layer.name!r} ({how})…")
        return task.worker

    def cancel(self) -> bool:
        """Stop the running task at its next step (within about a second)."""
        if not self._runner.cancel("cancelled"):
            return False
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling…")
        return True

    def compare(self, enabled: bool | None = None) -> bool:
        """Toggle raw vs denoised side by side in grid mode; returns whether it is on."""
        if self._life.closed:
            return False
        if enabled is None:
            enabled = self._compare is None
        if enabled and self._compare is None:
            self._compare_on()
        elif not enabled and self._compare is not None:
            self._compare_off()
        on = self._compare is not None
        self.compare_button.setChecked(on)
        self._update_buttons()
        return on

    def _compare_on(self) -> None:
        layer = self.selected_layer()
        output = self.output_layer(layer)
        if layer is None or output is None:
            show_warning("NMSG: denoise a layer first; Compare shows it beside its result.")
            return
        self._compare = SideBySide.show(self.viewer, layer, output)

    def _compare_off(self) -> None:
        state, self._compare = self._compare, None
        state.restore()

    def save_model(self, path: str | Path | None = None) -> Path | None:
        """Save the fitted or loaded model (file dialog when ``path`` is None)."""
        if self._runner.busy or self._life.closed:
            return None
        if self.session.model is None:
            show_error("NMSG: no model yet; denoise a layer or load a model first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save NMSG model", "nmsg-model.pt", "NMSG model (*.pt *.pth)"
            )
            if not path:
                return None
            if Path(path).suffix.lower() not in (".pt", ".pth"):
                path = f"{path}.pt"
        try:
            written = save_model(self.session.model, path)
        except USER_ERRORS as exc:
            show_error(f"NMSG: {exc}")
            return None
        self.status.setText(f"Model saved to {written}.")
        show_info(f"NMSG model saved to {written}")
        return Path(written)

    def load_model(self, path: str | Path | None = None) -> NMSGModel | None:
        """Load a saved model and tick *Reuse model* (file dialog when ``path`` is None)."""
        if self._runner.busy or self._life.closed:
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(
                self, "Load NMSG model", "", "NMSG model (*.pt *.pth)"
            )
            if not path:
                return None
        try:
            model = load_model(path)
        except USER_ERRORS as exc:
            show_error(f"NMSG: {exc}")
            return None
        except Exception as exc:  # a foreign file can fail in many ways inside torch
            show_error(f"NMSG: cannot read model {path}: {exc}")
            return None
        self._set_model(model, f"loaded from {Path(path).name}")
        self.reuse_check.setChecked(True)
        self.status.setText(f"Model loaded from {path}; Denoise now reuses it without training.")
        return model

    def _set_model(self, model: NMSGModel, source: str) -> None:
        self.session.set_model(model, source)
        self.model_info.setText(self.session.describe_model())

    # ------------------------------------------------------- task events
    def _started(self, task: Task, text: str) -> None:
        self._clock = StageClock()
        self._update_preview_z()
        self.progress.setValue(0)
        self.progress.setFormat("Starting…")
        self.status.setText(text)
        self.losses.setText("")
        self._update_buttons()

    def _on_event(self, task: Task, event: Any) -> None:
        if isinstance(event, Progress):
            fraction, text = self._clock.text(event.stage, event.step, event.total)
            self.progress.setValue(round(1000 * fraction))
            self.progress.setFormat(text)
            if event.metrics:
                self.losses.setText(f"Latest: {format_metrics(event.metrics)}")
            if event.stage == "denoise" and "output" in task.context:
                now = time.monotonic()
                if now - self._last_denoise_refresh > _DENOISE_REFRESH_S:
                    self._last_denoise_refresh = now
                    self._refresh_output(task)
        elif isinstance(event, Preview):
            buffer = task.context.get("buffer")
            if buffer is not None:
                buffer[event.region] = event.array
                self.previews_shown += 1
                self._refresh_output(task)
                self.preview_shown.emit(event.region)

    def _refresh_output(self, task: Task) -> None:
        output = self._layer_by_id(task.context["output"].unique_id)
        if output is not None:
            output.refresh()

    def _on_finished(self, outcome: Outcome) -> None:
        task = outcome.task
        label = TASK_LABELS.get(task.name, task.name)
        elapsed = format_duration(time.monotonic() - task.started)
        self.progress.setValue(1000 if outcome.status == "done" else self.progress.value())
        if outcome.status == "cancelled":
            reason = task.cancel_reason
            if reason == "cancelled":
                self.progress.setFormat("Cancelled")
                self.status.setText(f"{label} cancelled after {elapsed}.")
            else:
                self.progress.setFormat("Stopped")
                message = f"{label} stopped: {reason}."
                self.status.setText(message)
                show_warning(f"NMSG: {message}")
        elif outcome.status == "failed":
            self.progress.setFormat("Failed")
            error = outcome.error
            self.status.setText(f"{label} failed: {error}")
            if isinstance(error, USER_ERRORS):
                show_error(f"NMSG {label.lower()}: {error}")
            else:  # a bug: keep the traceback reachable from the notification
                notification_manager.receive_error(type(error), error, error.__traceback__)
        elif task.name == "learn":
            self._finish_learn(task, outcome.result, elapsed)
        else:
            self._finish_denoise(task, outcome.result, elapsed)
        self._update_buttons()
        self.run_finished.emit(task.name, outcome.status)

    def _finish_learn(self, task: Task, learning: NoiseLearning, elapsed: str) -> None:
        layer = task.context["layer"]
        self._remember_noise(layer, task.context["config"], learning)
        self.progress.setFormat("Noise learned")
        note = learning.patches.note
        self.status.setText(f"Noise of {layer.name!r} learned in {elapsed}. {note}")
        self.fidelity.setText(format_fidelity(learning.fidelity))
        if self._layer_by_id(layer.unique_id) is not None:
            show_noise_layers(self.viewer, layer, learning)

    def _finish_denoise(self, task: Task, result: Any, elapsed: str) -> None:
        learning, model, out = result
        context = task.context
        layer, output, buffer = context["layer"], context["output"], context["buffer"]
        if learning is not None:
            self._remember_noise(layer, task.context["config"], learning)
            self.fidelity.setText(format_fidelity(learning.fidelity))
        if not task.context["reused"]:
            self._set_model(model, f"fitted on {layer.name!r}")
        if self._layer_by_id(output.unique_id) is not None:
            if output.data is not buffer:  # replaced meanwhile: show the result
                output.data = buffer
            output.contrast_limits = display_limits(out)
            output.refresh()
        self.progress.setFormat("Done")
        message = f"Denoised {layer.name!r} in {elapsed} → {output.name!r}."
        if model.quality is not None:
            message += f" Quality: {model.quality.summary()}."
            if self._layer_by_id(output.unique_id) is not None:
                output.metadata = {
                    **output.metadata,
                    "napari_nmsg_quality": model.quality.to_dict(),
                }
        self.status.setText(message)

    def _remember_noise(self, layer: Image, config: NMSGConfig, learning: NoiseLearning) -> None:
        self.session.remember_noise(layer.unique_id, layer.data, config, learning)

    # ---------------------------------------------------------- state
    def _update_buttons(self) -> None:
        if self._life.closed:
            return
        busy = self._runner.busy
        has_layer = self.selected_layer() is not None
        self.learn_button.setEnabled(not busy and has_layer)
        self.denoise_button.setEnabled(not busy and has_layer)
        self.cancel_button.setEnabled(busy and self._runner.task.cancel_reason is None)
        self.save_button.setEnabled(not busy and self.session.model is not None)
        self.load_button.setEnabled(not busy)
        self.reuse_check.setEnabled(not busy and self.session.model is not None)
        self.compare_button.setEnabled(
            self._compare is not None or (has_layer and self.output_layer() is not None)
        )
        self.settings.setEnabled(not busy)
        self.advanced.setEnabled(not busy)

    def _shutdown(self) -> None:
        """Stop any run and let go of the viewer (widget closed or removed from its dock)."""
        if self._life.closed:
            return
        self._life.closed = True
        self._runner.shutdown()
        self._disconnect_viewer()

    def closeEvent(self, event: Any) -> None:
        self._shutdown()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._was_docked = True
            elif self._was_docked:  # taken out of its dock: napari's close button
                self._shutdown()
        return super().event(event)


__all__ = ["NMSGWidget"]
