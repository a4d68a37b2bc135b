"""Where previews are made and land: the viewed slice and a run's output layer (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_nmsg._layers import ROLE_KEY
from napari_nmsg._output_layers import QUALITY_KEY, RunOutput, ViewedSlice, find_output
from napari_nmsg._session import Session
from napari_nmsg.engine import Preview, Progress


class _Quality:
    def to_dict(self):
        return {"gaussian_sigma": 1.5}


@pytest.fixture
def viewer():
    viewer = ViewerModel()
    data = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    viewer.add_image(data, name="tomo", scale=(2, 1, 1), translate=(10, 0, 0), metadata={"k": 1})
    return viewer


def test_output_has_the_inputs_geometry_and_is_reused_by_the_next_run(viewer):
    session, raw = Session(), viewer.layers["tomo"]
    run = RunOutput.prepare(viewer, session, raw)
    output = run.layer
    assert output.name == "tomo denoised" and output.data is run.buffer
    assert run.buffer.dtype == np.float32 and not run.buffer.any()
    np.testing.assert_array_equal(output.scale, raw.scale)
    np.testing.assert_array_equal(output.translate, raw.translate)
    assert output.metadata["k"] == 1 and output.metadata[ROLE_KEY] == "denoised"
    assert find_output(viewer, session, raw) is output
    again = RunOutput.prepare(viewer, session, raw)
    assert again.layer is output and output.data is again.buffer and len(viewer.layers) == 2


def test_a_users_layer_of_the_same_name_is_not_overwritten(viewer):
    mine = viewer.add_image(np.ones((4, 6, 6)), name="tomo denoised")
    run = RunOutput.prepare(viewer, Session(), viewer.layers["tomo"])
    assert run.layer is not mine and np.all(mine.data == 1)


def test_previews_land_in_the_buffer_and_the_result_is_finished(viewer):
    run = RunOutput.prepare(viewer, Session(), viewer.layers["tomo"])
    region = (slice(1, 2), slice(None), slice(None))
    assert run.show(Preview(region, np.full((1, 6, 6), 3.0, np.float32)))
    assert not run.show(Progress("denoise", 1, 2))
    assert np.all(run.buffer[1] == 3) and not run.buffer[0].any()
    run.buffer[:] = np.linspace(0, 1, run.buffer.size).reshape(run.buffer.shape)
    run.finish(run.buffer, _Quality())
    low, high = run.layer.contrast_limits
    assert 0 <= low < 0.01 and 0.99 < high <= 1
    assert run.layer.metadata[QUALITY_KEY] == {"gaussian_sigma": 1.5}
    viewer.layers.remove(run.layer)
    run.finish(run.buffer)  # a deleted output is left alone


def test_viewed_slice_follows_the_viewer_in_the_layers_own_index(viewer):
    viewed, raw = ViewedSlice(viewer), viewer.layers["tomo"]
    assert viewed.position() is None
    viewer.dims.set_point(0, 10 + 2 * 3)  # world z of index 3 (scale 2, origin 10)
    viewed.follow(raw)
    assert viewed.position() == 3
    viewer.dims.set_point(0, 1000)
    viewed.follow(raw)
    assert viewed.position() == 3  # clipped to the volume
    viewed.follow(None)
    assert viewed.position() is None
