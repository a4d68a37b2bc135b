"""The Tomogram picker over a napari viewer model (its layer list is all the picker uses)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_nmsg._layer_picker import LayerPicker
from napari_nmsg._layers import ROLE_KEY

VOLUME = np.zeros((4, 8, 8), np.float32)


@pytest.fixture
def viewer():
    viewer = ViewerModel()
    viewer.add_image(VOLUME, name="a")
    viewer.add_image(VOLUME, name="b")
    return viewer


@pytest.fixture
def picker(qtbot, viewer):
    picker = LayerPicker(viewer)
    qtbot.addWidget(picker)
    return picker


def names(picker):
    return [picker.itemText(i) for i in range(picker.count())]


def test_lists_only_3d_single_channel_volumes_top_first(viewer, picker):
    viewer.add_image(np.zeros((8, 8)), name="2D")
    viewer.add_image(np.zeros((4, 8, 8, 3)), name="rgb", rgb=True)
    viewer.add_points(np.zeros((1, 3)), name="points")
    viewer.add_image(VOLUME, name="mosaic", metadata={ROLE_KEY: "noise-real"})
    assert names(picker) == ["b", "a"]


def test_follows_add_rename_reorder_remove_and_keeps_the_choice(viewer, picker):
    picker.setCurrentText("a")
    changes = []
    picker.layer_changed.connect(lambda: changes.append(picker.currentText()))
    viewer.add_image(VOLUME, name="c")
    assert names(picker) == ["c", "b", "a"] and picker.selected().name == "a"
    viewer.layers["b"].name = "b2"
    assert names(picker) == ["c", "b2", "a"]  # renamed in place, not moved to the end
    viewer.layers["a"].name = "a2"
    assert picker.selected().name == "a2"  # renaming the chosen layer keeps it chosen
    viewer.layers["a2"].name = "a"
    viewer.layers.move(0, len(viewer.layers))  # "a" to the top
    assert names(picker) == ["a", "c", "b2"] and picker.selected().name == "a"
    viewer.layers.remove("c")
    assert names(picker) == ["a", "b2"] and changes[-1] == "a"
    picker.setCurrentText("b2")
    assert changes[-1] == "b2"  # a choice by the user is a change too


def test_with_no_choice_the_active_visible_layer_is_picked_else_the_top_visible(viewer, qtbot):
    viewer.layers["b"].visible = False
    viewer.layers.selection.active = viewer.layers["b"]
    picker = LayerPicker(viewer)
    qtbot.addWidget(picker)
    assert picker.selected().name == "a"  # "b" is active but hidden
    viewer.layers.selection.active = viewer.layers["a"]
    viewer.layers.remove("a")
    assert names(picker) == ["b"]
    assert picker.selected().name == "b"  # hidden, but the only one left


def test_removal_is_told_before_the_list_drops_the_layer(viewer, picker):
    seen = []
    picker.layer_removed.connect(lambda layer: seen.append((layer.name, names(picker))))
    viewer.layers.remove("a")
    assert seen == [("a", ["b", "a"])]
    assert names(picker) == ["b"]


def test_released_picker_no_longer_follows(viewer, picker):
    picker.release()
    viewer.add_image(VOLUME, name="late")
    viewer.layers["a"].name = "renamed"
    viewer.layers.remove("b")
    assert names(picker) == ["b", "a"]
