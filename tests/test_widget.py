"""The NMSG dock widget in a real napari viewer (run under Xvfb).

Volumes are 32³ and runs a handful of steps, so the whole file takes well under two minutes
on two CPU cores. "Long" runs (for cancel / close / delete) are started with thousands of
steps and always stopped long before they could finish.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from napari.layers import Layer
from qtpy.QtCore import Qt

import napari_nmsg._widget as widget_module
from napari_nmsg import PRESETS, available_devices
from napari_nmsg._compare import viewer_grid
from napari_nmsg._layers import noise_mosaic
from napari_nmsg._sample_data import make_sample_data
from napari_nmsg._session import mask_fingerprint
from napari_nmsg.engine import NMSGConfig, Progress, iter_denoise, load_model, run_events

SHAPE = (32, 32, 32)
LONG_STEPS = 100_000  # never reached: such runs are cancelled / closed / interrupted
RUN_TIMEOUT_MS = 60_000


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two shared cores: a second intra-op thread only fights other processes for them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def notifications(monkeypatch):
    """Capture the widget's napari notifications as (kind, message)."""
    seen: list[tuple[str, str]] = []
    for kind in ("show_error", "show_warning", "show_info"):
        monkeypatch.setattr(
            widget_module, kind, lambda message, kind=kind: seen.append((kind, str(message)))
        )
    return seen


def _add_layers(viewer, layer_data):
    return [viewer.add_layer(Layer.create(*data)) for data in layer_data]


@pytest.fixture
def setup(make_napari_viewer):
    """A viewer with the 32³ sample tomogram and the widget docked through npe2."""
    viewer = make_napari_viewer()
    raw, truth = _add_layers(viewer, make_sample_data(SHAPE))
    dock, widget = viewer.window.add_plugin_dock_widget("napari-nmsg", "NMSG denoising")
    assert widget.selected_layer().name == raw.name
    return viewer, dock, widget, raw, truth


def tiny(widget, steps=6, noise_model="spectral", preview_every=2):
    """Settings for seconds-long runs on 32³."""
    f = widget.fields
    f["train_steps"].setValue(steps)
    f["noise_model"].setCurrentText(noise_model)
    f["gan_steps"].setValue(2)
    f["crop"].setValue(16)
    f["unet_width"].setValue(8)
    f["tile"].setValue(32)
    f["overlap"].setValue(8)
    f["preview_every"].setValue(preview_every)


def run_to_end(qtbot, widget, start):
    """Start a run with ``start()`` and wait for ``run_finished``; return (status, events)."""
    events: list = []
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as blocker:
        worker = start()
        assert worker is not None
        worker.yielded.connect(events.append)
    return blocker.args, events


def wait_for_training(qtbot, widget):
    qtbot.waitUntil(
        lambda: widget.progress.format().startswith("Training the denoiser"), timeout=30_000
    )


def buttons_idle(widget) -> bool:
    return (
        widget.learn_button.isEnabled()
        and widget.denoise_button.isEnabled()
        and widget.load_button.isEnabled()
        and not widget.cancel_button.isEnabled()
        and not widget.busy
    )


def test_device_choices_are_auto_plus_available(setup):
    _, _, widget, _, _ = setup
    items = [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())]
    assert items == ["auto", *available_devices()]
    assert widget.config().device == "auto"


def test_picker_lists_3d_image_layers_and_follows_changes(setup):
    viewer, _, widget, raw, truth = setup

    def names():
        return [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]

    assert names() == [truth.name, raw.name]  # top first, like the layer list
    viewer.add_image(np.zeros((20, 20)), name="a 2D image")
    viewer.add_image(np.random.default_rng(0).random((20, 20, 20, 3)), name="rgb", rgb=True)
    viewer.add_points(np.zeros((1, 3)), name="points")
    assert names() == [truth.name, raw.name]
    truth.name = "renamed truth"
    assert names() == ["renamed truth", raw.name]
    assert widget.selected_layer().name == raw.name  # the choice survives the refresh
    viewer.layers.remove(raw)
    assert names() == ["renamed truth"]
    viewer.layers.remove(viewer.layers["renamed truth"])
    assert names() == []
    assert not widget.learn_button.isEnabled() and not widget.denoise_button.isEnabled()


def test_presets_fill_advanced_fields_and_settings_reach_the_config(setup):
    _, _, widget, _, _ = setup
    widget.preset_combo.setCurrentText("quality")
    quality = NMSGConfig.preset("quality")
    assert quality.train_steps != NMSGConfig.preset("fast").train_steps
    assert widget.fields["train_steps"].value() == quality.train_steps
    assert widget.fields["crop"].value() == quality.crop
    widget.fields["lambda_grad"].setValue(0.1)
    widget.fields["lambda_gui"].setValue(0.5)
    widget.fields["wedge_axis"].setCurrentText("1 (Y)")
    assert widget.config().amp is None  # auto
    assert widget.fields["inference_pairs"].value() == quality.inference_pairs
    widget.fields["inference_pairs"].setValue(0)
    widget.fields["amp"].setCurrentText("on (bfloat16 CPU / float16 CUDA)")
    widget.seed_spin.setValue(7)
    config = widget.config()
    assert (config.crop, config.train_steps, config.seed) == (
        quality.crop,
        quality.train_steps,
        7,
    )
    assert (config.lambda_grad, config.lambda_gui, config.wedge_axis, config.amp) == (
        0.1,
        0.5,
        1,
        True,
    )
    assert config.inference_pairs == 0
    widget.fields["crop"].setValue(42)  # not a multiple of 2**depth = 4
    with pytest.raises(ValueError, match="crop=42"):
        widget.config()


def test_learn_noise_shows_real_and_generated_patches(setup, qtbot):
    viewer, _, widget, raw, _ = setup
    tiny(widget, noise_model="gan")
    (task, status), events = run_to_end(qtbot, widget, widget.learn_noise)
    assert (task, status) == ("learn", "done")
    stages = {e.stage for e in events if isinstance(e, Progress)}
    assert {"noise-patches", "noise-model"} <= stages
    learning = widget.session.learned_noise
    real = viewer.layers[f"{raw.name} noise (real)"]
    generated = viewer.layers[f"{raw.name} noise (generated)"]
    axis = learning.normalisation.wedge_axis
    np.testing.assert_array_equal(real.data, noise_mosaic(learning.real_examples, axis))
    np.testing.assert_array_equal(generated.data, noise_mosaic(learning.generated_examples, axis))
    assert real.data.shape == generated.data.shape
    assert tuple(real.contrast_limits) == tuple(generated.contrast_limits)
    np.testing.assert_allclose(real.scale, raw.scale)
    # placed beside the tomogram, not on top of it
    assert real.translate[2] > raw.translate[2] + raw.data.shape[2] * raw.scale[2]
    assert learning.patches.note in widget.status.text()
    text = widget.fidelity.text()
    assert "spectral: spectrum error" in text and "gan: spectrum error" in text
    gan = learning.fidelity["gan"]["log_psd_error"]
    assert f"{gan:.3f}" in text
    # the mosaics are not offered for denoising
    assert real.name not in [widget.layer_combo.itemText(i) for i in range(2)]
    assert buttons_idle(widget)


def test_a_painted_labels_layer_supplies_the_noise_patches(setup, qtbot):
    viewer, _, widget, raw, _ = setup
    tiny(widget)
    picker = widget.background_combo

    def names():
        return [picker.itemText(i) for i in range(picker.count())]

    assert names() == ["found automatically"] and picker.selected() is None
    labels = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="ice")
    viewer.add_labels(np.zeros((20, 20), np.uint8), name="2D labels")
    assert names() == ["found automatically", "ice"]
    assert picker.selected() is None  # an optional input is never guessed
    picker.setCurrentText("ice")
    labels.data[:14] = 1  # painted in place, as the brush does

    def inside(mask, learning):
        size = learning.patches.patch_size
        boxes = [tuple(slice(c, c + size) for c in corner) for corner in learning.patches.corners]
        return all(mask[box].all() for box in boxes)

    (task, status), _ = run_to_end(qtbot, widget, widget.learn_noise)
    assert (task, status) == ("learn", "done")
    learning = widget.session.learned_noise
    assert "from the marked background" in widget.status.text()
    assert inside(labels.data, learning)  # a cube: the canonical axes are the file's
    assert "spectral, automatic background: spectrum error" in widget.fidelity.text()
    config = widget.config()
    key = mask_fingerprint(labels.data)
    assert widget.session.cached_noise(raw.unique_id, raw.data, config, key) is learning
    assert widget.session.cached_noise(raw.unique_id, raw.data, config, None) is None

    labels.data[:14] = 0
    labels.data[18:] = 2  # painted elsewhere: the cached noise no longer applies
    repainted = mask_fingerprint(labels.data)
    assert repainted != key
    assert widget.session.cached_noise(raw.unique_id, raw.data, config, repainted) is None
    (task, status), _ = run_to_end(qtbot, widget, widget.denoise)
    assert (task, status) == ("denoise", "done")
    relearned = widget.session.learned_noise
    assert relearned is not learning and inside(labels.data, relearned)

    picker.setCurrentText("found automatically")
    assert picker.selected() is None
    viewer.layers.remove(labels)
    assert names() == ["found automatically"]


def test_learn_then_denoise_with_live_previews_and_compare(setup, qtbot):
    viewer, _, widget, raw, truth = setup
    tiny(widget, steps=6, preview_every=2)
    assert run_to_end(qtbot, widget, widget.learn_noise)[0] == ["learn", "done"]

    viewer.dims.set_point(0, 5 * raw.scale[0])  # look at slice z = 5
    previews = []

    def on_preview(region):
        output = viewer.layers[f"{raw.name} denoised"]
        previews.append((region, widget.busy, output.data[region].copy()))

    widget.preview_shown.connect(on_preview)
    (task, status), events = run_to_end(qtbot, widget, widget.denoise)
    assert (task, status) == ("denoise", "done")

    # noise was learned already: this run only trains and denoises
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert "noise-patches" not in stages and "noise-model" not in stages
    assert stages.count("train") == 6 and stages[-1] == "denoise"
    # previews arrived while training ran, around the slice the user looks at
    assert 1 <= len(previews) <= 3  # due at steps 2, 4, 6, held to a tenth of the time
    for region, busy, values in previews:
        assert busy
        assert region[0].start <= 5 < region[0].stop
        assert np.all(np.isfinite(values)) and np.abs(values).max() > 0
    first_region = previews[0][0]
    output = viewer.layers[f"{raw.name} denoised"]
    assert not np.array_equal(previews[0][2], output.data[first_region])  # the slab evolves
    assert output.data.shape == raw.data.shape
    np.testing.assert_array_equal(output.scale, raw.scale)
    np.testing.assert_array_equal(output.translate, raw.translate)
    assert {k: output.metadata[k] for k in raw.metadata} == raw.metadata
    assert output.data.dtype == np.float32 and np.all(np.isfinite(output.data))
    assert np.abs(output.data - raw.data).max() > 0
    # the whole volume was filled, not only the preview slab
    outside = np.ones(raw.data.shape[0], bool)
    outside[first_region[0]] = False
    assert np.abs(output.data[outside]).max() > 0
    np.testing.assert_allclose(output.data.mean(), raw.data.mean(), atol=3 * raw.data.std())
    assert widget.model_info.text().startswith("Model: fitted on")
    assert widget.progress.value() == 1000 and buttons_idle(widget)
    # the self-supervised estimate is shown and kept with the output layer
    assert "Quality: estimated" in widget.status.text()
    assert output.metadata["napari_nmsg_quality"]["gaussian_sigma"] > 0

    # Compare: raw left, denoised right, nothing else visible; then restore everything
    grid = viewer_grid(viewer)
    assert not truth.visible
    qtbot.mouseClick(widget.compare_button, Qt.MouseButton.LeftButton)
    assert widget.compare_button.isChecked() and grid.enabled
    assert [layer.name for layer in viewer.layers if layer.visible] == [raw.name, output.name]
    layers = list(viewer.layers)
    assert grid.position(layers.index(raw), layers) == (0, 0)
    assert grid.position(layers.index(output), layers) == (0, 1)
    qtbot.mouseClick(widget.compare_button, Qt.MouseButton.LeftButton)
    assert not widget.compare_button.isChecked() and not grid.enabled
    assert not truth.visible and raw.visible and output.visible
    assert all(layer.visible for layer in viewer.layers if "noise" in layer.name)


def test_busy_buttons_second_click_and_cancel_latency(setup, qtbot):
    viewer, _, widget, raw, _ = setup
    tiny(widget, steps=LONG_STEPS, preview_every=LONG_STEPS)
    worker = widget.denoise()
    wait_for_training(qtbot, widget)
    assert widget.busy and widget.cancel_button.isEnabled()
    for button in (widget.learn_button, widget.denoise_button, widget.save_button):
        assert not button.isEnabled()
    assert not widget.settings.isEnabled() and not widget.advanced.isEnabled()
    qtbot.mouseClick(widget.denoise_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(widget.learn_button, Qt.MouseButton.LeftButton)
    assert widget.denoise() is None and widget.learn_noise() is None
    assert widget.worker is worker  # the second click started nothing

    with qtbot.waitSignal(widget.run_finished, timeout=5_000) as blocker:
        start = time.perf_counter()
        qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    latency = time.perf_counter() - start
    print(f"cancel latency {latency:.3f} s")
    assert blocker.args == ["denoise", "cancelled"]
    assert latency < 2.0
    assert not worker.is_running
    assert buttons_idle(widget)
    assert "cancelled" in widget.status.text()
    # the viewer is still usable, and a new run starts at once
    viewer.dims.set_point(0, 3 * raw.scale[0])
    tiny(widget, steps=2)
    assert run_to_end(qtbot, widget, widget.denoise)[0] == ["denoise", "done"]


@pytest.mark.parametrize("how", ["dock close button", "widget.close()"])
def test_closing_the_widget_stops_its_worker(setup, qtbot, how):
    viewer, dock, widget, raw, _ = setup
    tiny(widget, steps=LONG_STEPS, preview_every=1)
    worker = widget.denoise()
    wait_for_training(qtbot, widget)
    output = viewer.layers[f"{raw.name} denoised"]
    with qtbot.waitSignal(worker.finished, timeout=3_000):
        if how == "dock close button":
            viewer.window.remove_dock_widget(dock)
        else:
            widget.close()
    assert not worker.is_running
    frozen = output.data.copy()
    qtbot.wait(300)  # late events of the stopped run change nothing
    np.testing.assert_array_equal(output.data, frozen)
    viewer.add_image(np.zeros(SHAPE), name="added after close")  # no callbacks fire
    widget.deleteLater()


def test_deleting_the_input_layer_ends_the_run(setup, qtbot, notifications):
    viewer, _, widget, raw, _ = setup
    tiny(widget, steps=LONG_STEPS, preview_every=LONG_STEPS)
    widget.denoise()
    wait_for_training(qtbot, widget)
    with qtbot.waitSignal(widget.run_finished, timeout=5_000) as blocker:
        viewer.layers.remove(raw)
    assert blocker.args == ["denoise", "cancelled"]
    message = "Denoise stopped: the input layer 'simulated tomogram' was deleted."
    assert widget.status.text() == message
    assert ("show_warning", f"NMSG: {message}") in notifications
    assert buttons_idle(widget)
    assert raw.name not in [widget.layer_combo.itemText(i) for i in range(2)]


def test_bad_input_is_one_clear_notification(setup, qtbot, notifications):
    viewer, _, widget, _, _ = setup
    viewer.add_image(np.ones((8, 32, 32), np.float32), name="thin")
    widget.layer_combo.setCurrentText("thin")
    tiny(widget)
    (task, status), _ = run_to_end(qtbot, widget, widget.denoise)
    assert (task, status) == ("denoise", "failed")
    kinds = [kind for kind, _ in notifications]
    assert kinds == ["show_error"]
    assert "too small" in notifications[0][1] and "\n" not in notifications[0][1]
    assert buttons_idle(widget)


def test_gan_runs_with_the_presets_averaged_pairs_unless_the_user_sets_the_field(
    setup, qtbot, tmp_path
):
    """One pass f(y) is not safe for a GAN-trained network: untouched, the field keeps the
    preset's averaged pairs; edited, it is taken as is."""
    viewer, _, widget, raw, _ = setup
    tiny(widget, steps=2, noise_model="gan", preview_every=LONG_STEPS)
    preset_pairs = PRESETS["fast"]["inference_pairs"]
    assert preset_pairs > 0
    assert widget.fields["inference_pairs"].value() == preset_pairs
    assert widget.config().inference_pairs == preset_pairs
    assert run_to_end(qtbot, widget, widget.denoise)[0] == ["denoise", "done"]
    model = load_model(widget.save_model(tmp_path / "gan.pt"))
    assert model.config.inference_pairs == preset_pairs
    expected = run_events(iter_denoise(raw.data, model))
    output = viewer.layers[f"{raw.name} denoised"].data
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    widget.fields["inference_pairs"].setValue(2)
    widget.fields["inference_pairs"].setValue(0)  # the user's 0 stands
    assert widget.config().inference_pairs == 0
    widget.preset_combo.setCurrentText("balanced")  # a preset clears the user's edits
    assert widget.config().inference_pairs == PRESETS["balanced"]["inference_pairs"]


def test_save_load_and_denoise_another_layer_without_training(
    setup, qtbot, tmp_path, notifications
):
    viewer, _, widget, _, _ = setup
    tiny(widget, steps=4, preview_every=LONG_STEPS)
    widget.fields["inference_pairs"].setValue(1)
    assert not widget.save_button.isEnabled() and not widget.reuse_check.isEnabled()
    assert run_to_end(qtbot, widget, widget.denoise)[0] == ["denoise", "done"]
    path = widget.save_model(tmp_path / "model.pt")
    assert path == tmp_path / "model.pt" and path.is_file()

    # a fresh widget (e.g. another session) loads it and denoises another tomogram
    other_noisy = make_sample_data((32, 48, 32), seed=1)[0][0]
    other = viewer.add_image(other_noisy, name="other", scale=(5, 5, 5))
    fresh = widget_module.NMSGWidget(viewer)
    viewer.window.add_dock_widget(fresh, name="second")
    assert fresh.load_model(path) is not None
    assert fresh.reuse_check.isChecked() and "loaded from model.pt" in fresh.model_info.text()
    fresh.layer_combo.setCurrentText("other")
    fresh.fields["train_steps"].setValue(LONG_STEPS)  # would take hours if it trained
    (task, status), events = run_to_end(qtbot, fresh, fresh.denoise)
    assert (task, status) == ("denoise", "done")
    assert {e.stage for e in events if isinstance(e, Progress)} == {"denoise"}
    output = viewer.layers["other denoised"]
    assert output.data.shape == other.data.shape
    np.testing.assert_array_equal(output.scale, other.scale)
    # with the model's own inference settings (1 pair, 32³ tiles), not the fresh widget's
    # untouched fields (the fast preset's one pass, 64³ tiles)
    expected = run_events(iter_denoise(other.data, load_model(path)))
    np.testing.assert_allclose(output.data, expected, rtol=1e-5, atol=1e-5)

    assert fresh.load_model(tmp_path / "missing.pt") is None
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert fresh.load_model(tmp_path / "junk.pt") is None
    errors = [message for kind, message in notifications if kind == "show_error"]
    assert len(errors) == 2 and all("cannot read model" in m for m in errors)


# --- the two helpers the widget is built on ---------------------------------------------


def test_task_runner_drops_late_events_of_a_cancelled_run(qtbot):
    from napari_nmsg._task_worker import TaskRunner

    delivered, finished = [], []
    runner = TaskRunner(lambda task, event: delivered.append(event), finished.append)

    def flood():
        for i in range(10**9):  # yields faster than the GUI thread drains them
            time.sleep(0.0002)
            yield i

    task = runner.start("flood", flood)
    qtbot.waitUntil(lambda: len(delivered) > 0, timeout=5_000)
    with pytest.raises(RuntimeError, match="already running"):
        runner.start("second", flood)
    runner.cancel("stop")
    seen = len(delivered)
    qtbot.waitUntil(lambda: len(finished) == 1, timeout=5_000)
    assert len(delivered) == seen  # queued events of the cancelled run were dropped
    assert finished[0].task is task and finished[0].status == "cancelled"
    assert task.cancel_reason == "stop" and not runner.busy

    def broken():
        yield 1
        raise ValueError("bad input")

    runner.start("broken", broken)
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=5_000)
    assert finished[1].status == "failed" and str(finished[1].error) == "bad input"

    def quick():
        yield 1
        return 42

    runner.start("quick", quick)
    qtbot.waitUntil(lambda: len(finished) == 3, timeout=5_000)
    assert finished[2].status == "done" and finished[2].result == 42


def test_stage_clock_eta_and_labels():
    from napari_nmsg._progress import StageClock, format_duration, format_metrics

    now = [100.0]
    clock = StageClock(lambda: now[0])
    assert clock.text("train", 0, 300) == (0.0, "Training the denoiser 0/300")
    now[0] = 110.0
    fraction, text = clock.text("train", 10, 300)  # 1 s per step, 290 to go
    assert fraction == pytest.approx(10 / 300) and text.endswith("10/300 · ETA 4:50")
    now[0] = 111.0
    assert clock.text("denoise", 1, 4)[1] == "Denoising 1/4"  # new stage: no rate yet
    assert format_duration(3725) == "1:02:05"
    metrics = {"rec": 0.5, "loss": 0.25, "grad": 0.1}
    assert format_metrics(metrics) == "loss 0.25 · grad 0.1 · rec 0.5"
