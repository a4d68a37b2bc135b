"""Denoised layers live in memory-mapped scratch files, and lazy input layers are read
region by region: the widget on tomograms larger than RAM, checked on 32³ (real viewer)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_nmsg._writer import write_single_image
from napari_nmsg.engine import iter_denoise, run_events
from napari_nmsg.io import read_volume
from napari_nmsg.simulate import simulate_tomogram
from test_lazy_arrays import SlicesOnly
from test_widget import run_to_end, tiny


@pytest.fixture
def docked(make_napari_viewer):
    viewer = make_napari_viewer()
    noisy = simulate_tomogram((32, 32, 32), seed=3).noisy
    layer = viewer.add_image(noisy, name="tomo")
    _, widget = viewer.window.add_plugin_dock_widget("napari-nmsg", "NMSG denoising")
    tiny(widget, steps=3)
    return viewer, widget, layer


def _denoise(qtbot, widget) -> None:
    (task, status), _ = run_to_end(qtbot, widget, widget.denoise)
    assert (task, status) == ("denoise", "done")


def test_the_denoised_layer_is_a_scratch_file_deleted_with_its_layer(qtbot, docked):
    viewer, widget, layer = docked
    _denoise(qtbot, widget)
    output = widget.output_layer(layer)
    assert isinstance(output.data, np.memmap)
    first = widget.session.scratch.path_of(output.data)
    assert (
        first.parent
        == widget.session.scratch.folder
        == type(first)(os.environ["NAPARI_NMSG_SCRATCH"])
    )
    expected = run_events(iter_denoise(layer.data, widget.session.model))
    # to rounding: oneDNN's sums depend on the thread count of the thread that runs them,
    # and the widget's pooled worker thread may keep another one than this test's
    np.testing.assert_allclose(np.asarray(output.data), expected, rtol=0, atol=1e-6)

    _denoise(qtbot, widget)  # a new run gets a new file; the old one goes
    second = widget.session.scratch.path_of(output.data)
    assert second != first and second.exists() and not first.exists()

    viewer.layers.remove(output)
    assert not second.exists()


def test_closing_the_widget_frees_the_files_but_the_layer_keeps_its_data(qtbot, docked):
    viewer, widget, layer = docked
    _denoise(qtbot, widget)
    output = widget.output_layer(layer)
    path = widget.session.scratch.path_of(output.data)
    before = np.array(output.data)
    viewer.window.remove_dock_widget("all")
    qtbot.waitUntil(lambda: not path.exists(), timeout=5_000)
    np.testing.assert_array_equal(np.asarray(output.data), before)  # still mapped


def test_saving_a_denoised_layer_streams_it_to_mrc(qtbot, docked, tmp_path):
    _, widget, layer = docked
    _denoise(qtbot, widget)
    output = widget.output_layer(layer)
    meta = {"scale": (4.0, 4.0, 4.0), "translate": (1.0, 2.0, 3.0), "name": output.name}
    [written] = write_single_image(str(tmp_path / "saved.mrc"), output.data, meta)
    saved = read_volume(written)
    np.testing.assert_array_equal(np.asarray(saved.data), np.asarray(output.data))
    assert saved.voxel_size == (4.0, 4.0, 4.0) and saved.origin == (1.0, 2.0, 3.0)


def test_a_lazy_layer_is_denoised_without_being_loaded_whole(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    noisy = simulate_tomogram((32, 32, 32), seed=3).noisy
    eager = viewer.add_image(noisy, name="eager")
    lazy = viewer.add_image(SlicesOnly(noisy.copy()), name="lazy", contrast_limits=(-1, 1))
    _, widget = viewer.window.add_plugin_dock_widget("napari-nmsg", "NMSG denoising")
    tiny(widget, steps=3)
    results = {}
    for layer in (eager, lazy):
        widget.layer_combo.setCurrentText(layer.name)
        _denoise(qtbot, widget)
        results[layer.name] = np.asarray(widget.output_layer(layer).data)
    np.testing.assert_array_equal(results["lazy"], results["eager"])


def test_a_multiscale_layer_is_denoised_at_full_resolution(qtbot, make_napari_viewer):
    """As napari-ome-zarr opens an OME-Zarr pyramid: a list of lazy levels."""
    da = pytest.importorskip("dask.array")
    viewer = make_napari_viewer()
    noisy = simulate_tomogram((32, 32, 32), seed=3).noisy
    eager = viewer.add_image(noisy, name="eager")
    levels = [da.from_array(noisy, chunks=(8, 32, 32)), da.from_array(noisy[::2, ::2, ::2])]
    pyramid = viewer.add_image(levels, multiscale=True, name="pyramid", contrast_limits=(-1, 1))
    _, widget = viewer.window.add_plugin_dock_widget("napari-nmsg", "NMSG denoising")
    tiny(widget, steps=3)
    results = {}
    for layer in (eager, pyramid):
        widget.layer_combo.setCurrentText(layer.name)
        assert widget.selected_layer() is layer
        _denoise(qtbot, widget)
        results[layer.name] = np.asarray(widget.output_layer(layer).data)
    assert results["pyramid"].shape == noisy.shape
    np.testing.assert_array_equal(results["pyramid"], results["eager"])
