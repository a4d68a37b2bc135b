"""The widget's smaller parts on their own: settings, buttons, lifetime, model files, Compare."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from qtpy.QtWidgets import QWidget

from napari_nmsg._actions import ActionButtons
from napari_nmsg._compare import Comparison
from napari_nmsg._lifetime import CloseWatcher
from napari_nmsg._model_files import ModelFiles
from napari_nmsg._session import Session
from napari_nmsg._settings_panel import SettingsPanel
from napari_nmsg.engine import PRESETS
from napari_nmsg.errors import InputError


def test_settings_panel_builds_the_config_from_preset_and_edits(qtbot, tmp_path):
    panel = SettingsPanel(tmp_path)
    qtbot.addWidget(panel)
    panel.preset_combo.setCurrentText("quality")
    assert panel.advanced.fields["train_steps"].value() == PRESETS["quality"]["train_steps"]
    panel.advanced.fields["crop"].setValue(24)
    panel.seed_spin.setValue(3)
    assert panel.given_settings() == {"seed": 3, "device": "auto", "crop": 24}
    config = panel.config()
    assert (config.crop, config.seed, config.train_steps) == (
        24,
        3,
        PRESETS["quality"]["train_steps"],
    )
    assert panel.advanced.isHidden()
    panel.advanced_toggle.click()
    assert not panel.advanced.isHidden()
    assert panel.scratch_folder.edit.text() == str(tmp_path)
    chosen = []
    panel.scratch_folder.changed.connect(chosen.append)
    panel.scratch_folder.set_folder(tmp_path / "elsewhere")
    assert chosen == [str(tmp_path / "elsewhere")]


def test_action_buttons_follow_the_state(qtbot):
    actions = ActionButtons()
    qtbot.addWidget(actions)
    actions.update_state(idle=True, has_layer=False, has_model=False, can_compare=False)
    assert not actions.learn_button.isEnabled() and not actions.denoise_button.isEnabled()
    assert actions.load_button.isEnabled() and not actions.save_button.isEnabled()
    actions.update_state(idle=True, has_layer=True, has_model=True, can_compare=True)
    assert all(
        b.isEnabled() for b in (actions.learn_button, actions.save_button, actions.reuse_check)
    )
    actions.update_state(idle=False, has_layer=True, has_model=True, can_compare=True)
    assert not any(
        b.isEnabled() for b in (actions.learn_button, actions.denoise_button, actions.load_button)
    )
    assert actions.compare_button.isEnabled()  # Compare does not disturb a run


def test_close_watcher_fires_on_close_and_on_leaving_a_dock(qtbot):
    calls = []
    widget = QWidget()
    qtbot.addWidget(widget)
    CloseWatcher(widget, lambda: calls.append("closed"))
    widget.close()
    assert calls == ["closed"]

    dock, docked = QWidget(), QWidget()
    qtbot.addWidget(dock)
    CloseWatcher(docked, lambda: calls.append("undocked"))
    docked.setParent(dock)
    assert calls == ["closed"]  # docking is not leaving
    docked.setParent(None)
    assert calls == ["closed", "undocked"]
    docked.deleteLater()


def test_model_files_say_problems_in_one_line(qtbot, tmp_path):
    parent = QWidget()
    qtbot.addWidget(parent)
    session = Session()
    files = ModelFiles(session, parent)
    with pytest.raises(InputError, match="no model yet"):
        files.save(tmp_path / "model.pt")
    with pytest.raises(InputError, match=r"cannot read model .*no such file"):
        files.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot read model"):
        files.load(tmp_path / "junk.pt")
    assert session.model is None


def test_comparison_needs_both_layers_and_switches_off_again():
    viewer = ViewerModel()
    raw = viewer.add_image(np.zeros((4, 8, 8)), name="raw")
    out = viewer.add_image(np.ones((4, 8, 8)), name="raw denoised")
    other = viewer.add_image(np.ones((4, 8, 8)), name="other")
    comparison = Comparison(viewer)
    with pytest.raises(InputError, match="denoise a layer first"):
        comparison.switch(True, raw, None)
    assert comparison.switch(None, raw, out) and comparison.involves(out)
    assert not other.visible and not comparison.involves(other)
    assert comparison.switch(True, raw, out)  # already on: stays on
    assert not comparison.switch(None, raw, out)
    assert other.visible and not comparison.on
