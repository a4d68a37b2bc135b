"""The engine reads and writes any array that slices like numpy (zarr, dask, h5py), region
by region: such an input is never loaded whole, and the result is the numpy one's."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nmsg.engine import NMSGConfig, iter_run, run_events
from napari_nmsg.engine import volume as volume_module
from napari_nmsg.engine.volume import fit_normalisation

CONFIG = NMSGConfig(train_steps=3, crop=16, tile=16, overlap=4, inference_pairs=1)


class SlicesOnly:
    """An array that slices like numpy and refuses to be converted whole."""

    def __init__(self, data: np.ndarray):
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.largest_read = 0

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was loaded")

    def __getitem__(self, region):
        block = self._data[region]
        self.largest_read = max(self.largest_read, block.size)
        return np.array(block)  # a copy, as zarr gives: writes into it are lost

    def __setitem__(self, region, values):
        self._data[region] = values


@pytest.mark.parametrize("wedge_axis", [0, 1])
def test_an_array_that_only_slices_gives_the_numpy_result(small_tomogram, wedge_axis):
    noisy = np.ascontiguousarray(np.moveaxis(small_tomogram.noisy, 0, wedge_axis))
    config = CONFIG.replace(wedge_axis=wedge_axis)
    expected = run_events(iter_run(noisy, config)).output
    out = SlicesOnly(np.zeros_like(expected))
    run_events(iter_run(SlicesOnly(noisy), config, out=out))
    np.testing.assert_array_equal(out._data, expected)


def test_a_dask_array_gives_the_numpy_result(small_tomogram):
    da = pytest.importorskip("dask.array")
    noisy = small_tomogram.noisy
    expected = run_events(iter_run(noisy, CONFIG)).output
    lazy = da.from_array(noisy, chunks=(8, 32, 32))
    np.testing.assert_array_equal(run_events(iter_run(lazy, CONFIG)).output, expected)


def test_the_normalisation_reads_a_big_volume_slab_by_slab(monkeypatch):
    data = np.random.default_rng(0).normal(5.0, 2.0, size=(40, 24, 24)).astype(np.float32)
    monkeypatch.setattr(volume_module, "_CHUNK_VOXELS", 4 * 24 * 24)  # 4 planes per read
    lazy = SlicesOnly(data)
    for sample in (1000, 1 << 21):  # a random sample, and every voxel
        norm = fit_normalisation(lazy, sample=sample)
        assert norm == fit_normalisation(data, sample=sample)
    assert lazy.largest_read == 4 * 24 * 24
