"""The widget's Advanced form, generated from the declared settings (Qt, no viewer)."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox

from napari_nmsg._settings_form import FORM_SETTINGS, SettingsForm
from napari_nmsg.engine import NMSGConfig
from napari_nmsg.engine.config import NOISE_MODELS, SETTINGS


def test_form_has_one_field_per_declared_setting_with_its_label_and_help(qtbot):
    form = SettingsForm()
    qtbot.addWidget(form)
    assert list(form.fields) == [d.name for d in SETTINGS if d.setting.widget]
    for d in FORM_SETTINGS:
        assert form.fields[d.name].toolTip() == d.setting.help
        assert form.layout().labelForField(form.fields[d.name]).text() == d.setting.label
    noise = form.fields["noise_model"]
    assert isinstance(noise, QComboBox)
    assert [noise.itemText(i) for i in range(noise.count())] == list(NOISE_MODELS)
    assert isinstance(form.fields["gaussian_fallback"], QCheckBox)
    assert form.fields["tile"].suffix() == " voxels"


def test_shown_values_are_not_edits_and_edits_round_trip(qtbot):
    form = SettingsForm()
    qtbot.addWidget(form)
    quality = NMSGConfig.preset("quality")
    form.show_config(quality)
    assert form.edited_values() == {}
    assert form.fields["train_steps"].value() == quality.train_steps
    sigma = form.fields["base_sigma"]
    assert isinstance(sigma, QDoubleSpinBox)
    assert sigma.text() == "chosen by the validation"  # None, shown as what it means
    sigma.setValue(1.5)
    form.fields["gaussian_fallback"].setChecked(False)
    form.fields["wedge_axis"].setCurrentText("1 (Y)")
    edited = form.edited_values()
    assert edited == {"base_sigma": 1.5, "gaussian_fallback": False, "wedge_axis": 1}
    sigma.setValue(sigma.minimum())  # back to auto: still an edit, and it means None
    assert form.edited_values()["base_sigma"] is None
    config = NMSGConfig.preset("quality", **form.edited_values())
    assert (config.gaussian_fallback, config.wedge_axis) == (False, 1)
    form.show_config(NMSGConfig.preset("fast"))
    assert form.edited_values() == {}
