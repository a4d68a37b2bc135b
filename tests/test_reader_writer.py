"""The npe2 reader and writer: MRC in and out of napari, keeping voxel size and origin."""

from __future__ import annotations

import mrcfile
import npe2
import numpy as np
import pytest

from napari_nmsg._reader import napari_get_reader, read_tomograms
from napari_nmsg._writer import write_single_image
from napari_nmsg.errors import InputError, OutputError

VOXEL_XYZ = (13.7, 13.7, 27.4)  # Å, anisotropic so an axis-order mix-up shows
ORIGIN_XYZ = (-41.1, 137.0, 274.0)  # Å


@pytest.fixture(scope="module")
def npe2_plugins():
    """npe2's plugin manager with the installed plugins discovered (no viewer needed)."""
    manager = npe2.PluginManager.instance()
    manager.discover()
    assert manager.get_manifest("napari-nmsg").display_name == "NMSG denoising"
    return manager


@pytest.fixture
def mrc_path(tmp_path):
    """A real MRC written by mrcfile: (Z, Y, X) = (12, 20, 24) float32 with a ramp."""
    data = np.arange(12 * 20 * 24, dtype=np.float32).reshape(12, 20, 24) / 7.0
    path = tmp_path / "tomo.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = VOXEL_XYZ
        mrc.header.origin = ORIGIN_XYZ
    return path, data


def _reread(path):
    with mrcfile.open(path, permissive=True) as mrc:
        voxel = tuple(float(mrc.voxel_size[a]) for a in "xyz")
        origin = tuple(float(mrc.header.origin[a]) for a in "xyz")
        return mrc.data.copy(), voxel, origin


@pytest.mark.parametrize("suffix", [".mrc", ".rec", ".map", ".mrcs", ".MRC"])
def test_reader_claims_the_mrc_family(suffix):
    assert napari_get_reader(f"some/tomo{suffix}") is read_tomograms
    assert napari_get_reader([f"a{suffix}", f"b{suffix}"]) is read_tomograms


@pytest.mark.parametrize(
    "path", ["tomo.tif", "tomo.txt", "tomo.mrc.gz", "folder", ["a.mrc", "b.tif"]]
)
def test_reader_returns_none_for_other_files(path):
    assert napari_get_reader(path) is None


def test_reader_layer_data(mrc_path):
    path, data = mrc_path
    ((array, kwargs, kind),) = napari_get_reader(str(path))(str(path))
    assert kind == "image" and kwargs["name"] == "tomo"
    np.testing.assert_array_equal(array, data)
    assert isinstance(array, np.memmap)  # memory-mapped, not loaded
    np.testing.assert_allclose(kwargs["scale"], VOXEL_XYZ[::-1], rtol=1e-6)
    np.testing.assert_allclose(kwargs["translate"], ORIGIN_XYZ[::-1], rtol=1e-6)
    header = kwargs["metadata"]["mrc_header"]
    assert header["nx"] == 24 and header["nz"] == 12
    assert kwargs["metadata"]["source"] == str(path)
    lo, hi = kwargs["contrast_limits"]
    assert data.min() <= lo < hi <= data.max()


def test_npe2_read_then_write_keeps_voxel_size_origin_and_data(npe2_plugins, mrc_path, tmp_path):
    path, data = mrc_path
    ((array, kwargs, _),) = npe2.read([str(path)], stack=False, plugin_name="napari-nmsg")
    out = tmp_path / "copy.mrc"
    written = npe2.write(str(out), [(array, kwargs, "image")], plugin_name="napari-nmsg")
    assert written == [str(out)]
    data2, voxel, origin = _reread(out)
    np.testing.assert_array_equal(data2, data)
    np.testing.assert_allclose(voxel, VOXEL_XYZ, rtol=1e-6)
    np.testing.assert_allclose(origin, ORIGIN_XYZ, rtol=1e-6)


def test_viewer_open_and_save_round_trip(make_napari_viewer, mrc_path, tmp_path):
    path, data = mrc_path
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-nmsg")
    np.testing.assert_allclose(layer.scale, VOXEL_XYZ[::-1], rtol=1e-6)
    np.testing.assert_allclose(layer.translate, ORIGIN_XYZ[::-1], rtol=1e-6)
    # an edited layer (e.g. a denoised copy) saved next to it
    viewer.add_image(layer.data * 2, name="doubled", scale=layer.scale, translate=layer.translate)
    out = tmp_path / "doubled.mrc"
    assert viewer.layers["doubled"].save(str(out), plugin="napari-nmsg") == [str(out)]
    data2, voxel, origin = _reread(out)
    np.testing.assert_allclose(data2, data * 2)
    np.testing.assert_allclose(voxel, VOXEL_XYZ, rtol=1e-6)
    np.testing.assert_allclose(origin, ORIGIN_XYZ, rtol=1e-6)
    # the file a layer was read from is never overwritten
    before = path.read_bytes()
    with pytest.raises(OutputError, match="is the input file"):
        layer.save(str(path), plugin="napari-nmsg")
    assert path.read_bytes() == before


def test_writer_refuses_its_source_and_2d(mrc_path, tmp_path):
    path, _ = mrc_path
    meta = {"name": "x", "scale": [1, 1, 1], "translate": [0, 0, 0], "metadata": {}}
    memmap = read_tomograms(str(path))[0][0]
    with pytest.raises(OutputError, match="is the input file"):
        write_single_image(str(path), memmap, meta)  # found through the memory map
    with pytest.raises(OutputError, match="3D"):
        write_single_image(str(tmp_path / "flat.mrc"), np.zeros((4, 4)), meta)
    assert not (tmp_path / "flat.mrc").exists()
    assert not list(tmp_path.glob("*.part"))  # atomic: no debris


def test_reader_reports_broken_files_clearly(tmp_path):
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"not an mrc file at all" * 3)
    with pytest.raises(InputError, match="cannot read"):
        read_tomograms(str(bad))
