"""The *NMSG denoising* dock widget: a thin adapter between napari and the engine.

Assembled from parts, each in its own module: the layer picker (which tomogram), the
settings panel (preset, device, seed, Advanced), the action buttons, and the run panel
(the running task in a napari thread worker: progress bar, Cancel, status lines). The
runs it starts, with the only calls into the engine, are planned in :mod:`._runs`;
previews and results land in a :class:`~._output_layers.RunOutput`. This class wires the
parts, starts runs, turns their results into layers and messages, and is the one place
that notifies the user (parts raise or return instead). No maths here.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from napari.utils.notifications import notification_manager, show_error, show_info, show_warning
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ._actions import ActionButtons
from ._compare import Comparison, same_layer
from ._layer_picker import LayerPicker
from ._layers import is_background_layer, layer_by_id, show_noise_layers, volume_of
from ._lifetime import CloseWatcher
from ._model_files import ModelFiles
from ._output_layers import ViewedSlice, find_output
from ._progress import format_fidelity
from ._run_panel import RunPanel
from ._runs import Run, plan_denoise, plan_learn
from ._session import Session
from ._settings_panel import SettingsPanel
from ._task_worker import Outcome, Task
from .engine import NMSGConfig, NMSGModel, NoiseLearning, RunResult
from .errors import InputError, OutputError

if TYPE_CHECKING:
    from collections.abc import Callable

    import napari
    from napari.layers import Image
    from napari.qt.threading import GeneratorWorker

TASK_LABELS = {"learn": "Learn noise", "denoise": "Denoise"}
HINT = "Pick a 3D image layer, then Learn noise or Denoise."
AUTOMATIC_BACKGROUND = "found automatically"
USER_ERRORS = (InputError, OutputError, ValueError)  # said in one line, never a traceback
T = TypeVar("T")


class _Life:
    """Plain state readable from callbacks even after the Qt object is gone."""

    closed = False

    def close(self, *_: Any) -> None:
        self.closed = True


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
        self._slice = ViewedSlice(self.viewer)
        self.session = Session()  # the noise cache, model and outputs, without Qt
        self._models = ModelFiles(self.session, self)
        self._comparison = Comparison(self.viewer)
        self.previews_shown = 0  # preview slabs written into an output layer (all runs)
        self._build_ui()
        self.viewer.dims.events.current_step.connect(self._update_preview_z)
        self.destroyed.connect(self._life.close)
        CloseWatcher(self, self._shutdown)
        self._update_preview_z()
        self._update_buttons()

    def _build_ui(self) -> None:
        self.layer_combo = LayerPicker(self.viewer)
        self.layer_combo.layer_changed.connect(self._update_preview_z)
        self.layer_combo.layer_changed.connect(self._update_buttons)
        self.layer_combo.layer_removed.connect(self._on_layer_removed)
        self.settings = SettingsPanel(self.session.scratch.folder)
        self.settings.form.insertRow(0, "Tomogram", self.layer_combo)
        self.background_combo = LayerPicker(
            self.viewer,
            accepts=is_background_layer,
            none_label=AUTOMATIC_BACKGROUND,
            tooltip="a Labels layer painted over ice or vacuum: the noise is learned there",
        )
        self.settings.form.insertRow(1, "Background", self.background_combo)
        self.settings.scratch_folder.changed.connect(self._set_scratch_folder)
        self.actions = ActionButtons()
        self.actions.learn_button.clicked.connect(self.learn_noise)
        self.actions.denoise_button.clicked.connect(self.denoise)
        self.actions.save_button.clicked.connect(lambda: self.save_model())
        self.actions.load_button.clicked.connect(lambda: self.load_model())
        self.actions.compare_button.clicked.connect(self.compare)
        self.run_panel = RunPanel(TASK_LABELS)
        self.run_panel.task_event.connect(self._on_event)
        self.run_panel.task_finished.connect(self._on_finished)
        layout = QVBoxLayout(self)
        for part in (self.settings, self.actions, self.run_panel):
            layout.addWidget(part)

        s, a, p = self.settings, self.actions, self.run_panel  # names scripts and tests use
        self.preset_combo, self.device_combo = s.preset_combo, s.device_combo
        self.seed_spin, self.advanced, self.fields = s.seed_spin, s.advanced, s.advanced.fields
        self.learn_button, self.denoise_button = a.learn_button, a.denoise_button
        self.save_button, self.load_button = a.save_button, a.load_button
        self.compare_button, self.reuse_check = a.compare_button, a.reuse_check
        self.progress, self.cancel_button, self.status = p.progress, p.cancel_button, p.status
        self.losses, self.fidelity, self.model_info = p.losses, p.fidelity, p.model_info
        self.status.setText(HINT)
        self.model_info.setText(self.session.describe_model())

    def given_settings(self) -> dict[str, Any]:
        """Seed, device and the Advanced fields the user changed (see ``inference_settings``)."""
        return self.settings.given_settings()

    def config(self) -> NMSGConfig:
        """The preset with the user's changes; ``ValueError`` says what is inconsistent."""
        return self.settings.config()

    # ------------------------------------------------------------- layers
    def selected_layer(self) -> Image | None:
        """The layer chosen in the picker (``None`` if there is none)."""
        return self.layer_combo.selected()

    def output_layer(self, layer: Image | None = None) -> Image | None:
        """The ``<name> denoised`` layer made for ``layer`` (default: the selected one)."""
        layer = layer if layer is not None else self.selected_layer()
        return find_output(self.viewer, self.session, layer) if layer is not None else None

    def _on_layer_removed(self, layer: Image) -> None:
        """Stop what uses a deleted layer: a run on it, a comparison, its cached noise."""
        task = self.run_panel.task
        if task is not None:
            if same_layer(layer, task.context.get("layer")):
                self.run_panel.cancel(f"the input layer {layer.name!r} was deleted")
            elif "output" in task.context and same_layer(layer, task.context["output"].layer):
                self.run_panel.cancel(f"the output layer {layer.name!r} was deleted")
        if self._comparison.involves(layer):
            self.compare(False)
        self.session.forget_layer(layer.unique_id)
        self.session.scratch.release(layer.data)  # an output's file goes with its layer

    def _set_scratch_folder(self, folder: str) -> None:
        self.session.scratch.folder = Path(folder)

    def _update_preview_z(self, *_: Any) -> None:
        """Previews follow the slice the user looks at in the run's layer (or the chosen one)."""
        if not self._life.closed:
            task = self.run_panel.task
            self._slice.follow(task.context["layer"] if task is not None else self.selected_layer())

    # ---------------------------------------------------------- actions
    @property
    def busy(self) -> bool:
        return self.run_panel.busy

    @property
    def worker(self) -> GeneratorWorker | None:
        """The running worker (or ``None``): tests wait on its signals."""
        return getattr(self.run_panel.task, "worker", None)

    def learn_noise(self) -> Any:
        """Start *Learn noise* on the selected layer; returns the worker (``None`` if busy)."""
        return self._start(partial(plan_learn, background=self.background_combo.selected()))

    def denoise(self) -> Any:
        """Start *Denoise* on the selected layer; returns the worker (``None`` if busy).

        Learns the noise first unless it is cached for this layer and settings; with
        *Reuse model* checked, the fitted or loaded model denoises without training.
        """
        plan = partial(
            plan_denoise,
            self.viewer,
            self.session,
            given=self.given_settings(),
            reuse=self.reuse_check.isChecked(),
            preview_position=self._slice.position,
            background=self.background_combo.selected(),
        )
        return self._start(plan)

    def _start(self, plan: Callable[[Image, NMSGConfig], Run]) -> Any:
        """Plan a run on the selected layer with the current settings and start it."""
        if self.busy or self._life.closed:
            return None
        layer = self.selected_layer()
        if layer is None:
            show_error("NMSG: choose a 3D image layer first.")
            return None
        config = self._attempt(self.config, what="NMSG settings")
        run = self._attempt(plan, layer, config) if config is not None else None
        if run is None:
            return None
        task = self.run_panel.start(run.name, run.stream, run.text, **run.context)
        self._update_preview_z()  # now of the run's layer, whatever the picker shows later
        self._update_buttons()
        return task.worker

    def cancel(self) -> bool:
        """Stop the running task at its next step (within about a second)."""
        return self.run_panel.cancel()

    def compare(self, enabled: bool | None = None) -> bool:
        """Toggle raw vs denoised side by side in grid mode; returns whether it is on."""
        if self._life.closed:
            return False
        layer = self.selected_layer()
        try:
            self._comparison.switch(enabled, layer, self.output_layer(layer))
        except InputError as exc:
            show_warning(f"NMSG: {exc}")
        self.compare_button.setChecked(self._comparison.on)
        self._update_buttons()
        return self._comparison.on

    def save_model(self, path: str | Path | None = None) -> Path | None:
        """Save the fitted or loaded model (file dialog when ``path`` is None)."""
        written = self._attempt(self._models.save, path)
        if written is not None:
            self.status.setText(f"Model saved to {written}.")
            show_info(f"NMSG model saved to {written}")
        return written

    def load_model(self, path: str | Path | None = None) -> NMSGModel | None:
        """Load a saved model and tick *Reuse model* (file dialog when ``path`` is None)."""
        loaded = self._attempt(self._models.load, path)
        if loaded is None:
            return None
        self.model_info.setText(self.session.describe_model())
        self.reuse_check.setChecked(True)
        self._update_buttons()  # Save and Reuse now have a model
        self.status.setText(f"Model loaded from {loaded}; Denoise now reuses it without training.")
        return self.session.model

    def _attempt(self, action: Callable[..., T], *args: Any, what: str = "NMSG") -> T | None:
        """``action(*args)`` unless a run is going; a user error is one notification."""
        if self.busy or self._life.closed:
            return None
        try:
            return action(*args)
        except USER_ERRORS as exc:
            show_error(f"{what}: {exc}")
            return None

    # ------------------------------------------------------- task events
    def _on_event(self, task: Task, event: Any) -> None:
        output = task.context.get("output")
        if output is not None and output.show(event):
            self.previews_shown += 1
            self.preview_shown.emit(event.region)

    def _on_finished(self, outcome: Outcome, message: str) -> None:
        task, error = outcome.task, outcome.error
        if outcome.status == "done":
            finish = self._finish_learn if task.name == "learn" else self._finish_denoise
            finish(task, outcome.result)
        elif outcome.status == "failed" and isinstance(error, USER_ERRORS):
            show_error(f"NMSG {self.run_panel.label(task).lower()}: {error}")
        elif outcome.status == "failed":  # a bug: the notification keeps its traceback
            notification_manager.receive_error(type(error), error, error.__traceback__)
        elif task.cancel_reason != "cancelled":  # stopped for a reason, e.g. a deleted layer
            show_warning(f"NMSG: {message}")
        self._update_buttons()
        self.run_finished.emit(task.name, outcome.status)

    def _finish_learn(self, task: Task, learning: NoiseLearning) -> None:
        layer = task.context["layer"]
        self._remember_noise(task, learning)
        self.progress.setFormat("Noise learned")
        elapsed, note = self.run_panel.elapsed(task), learning.patches.note
        self.status.setText(f"Noise of {layer.name!r} learned in {elapsed}. {note}")
        if layer_by_id(self.viewer, layer.unique_id) is not None:
            show_noise_layers(self.viewer, layer, learning)

    def _finish_denoise(self, task: Task, result: RunResult) -> None:
        model = result.model
        layer, output = task.context["layer"], task.context["output"]
        if result.noise is not None:
            self._remember_noise(task, result.noise)
        if not task.context["reused"]:
            self.session.set_model(model, f"fitted on {layer.name!r}")
            self.model_info.setText(self.session.describe_model())
        output.finish(result.output, model.quality)
        elapsed = self.run_panel.elapsed(task)
        message = f"Denoised {layer.name!r} in {elapsed} → {output.layer.name!r}."
        if model.quality is not None:
            message += f" Quality: {model.quality.summary()}."
        self.status.setText(message)

    def _remember_noise(self, task: Task, learning: NoiseLearning) -> None:
        layer, config, background = (task.context[k] for k in ("layer", "config", "background"))
        self.session.remember_noise(layer.unique_id, volume_of(layer), config, learning, background)
        self.fidelity.setText(format_fidelity(learning.fidelity))

    # ---------------------------------------------------------- state
    def _update_buttons(self, *_: Any) -> None:
        if self._life.closed:
            return
        has_layer = self.selected_layer() is not None
        self.actions.update_state(
            idle=not self.busy,
            has_layer=has_layer,
            has_model=self.session.model is not None,
            can_compare=self._comparison.on or (has_layer and self.output_layer() is not None),
        )
        self.settings.setEnabled(not self.busy)

    def _shutdown(self) -> None:
        """Stop any run and let go of the viewer (widget closed or removed from its dock)."""
        if self._life.closed:
            return
        self._life.closed = True
        self.run_panel.shutdown()
        # output layers left in the viewer keep their data: a deleted file stays mapped
        self.session.scratch.release_all()
        self.layer_combo.release()
        self.background_combo.release()
        self.viewer.dims.events.current_step.disconnect(self._update_preview_z)


__all__ = ["NMSGWidget"]
