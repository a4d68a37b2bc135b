import os
import warnings

import mrcfile
import numpy as np
import pytest
import tifffile

from napari_nmsg.errors import InputError, OutputError
from napari_nmsg.io import mrc_output, read_mrc, read_volume, write_mrc


def test_mrc_round_trip_keeps_voxel_size_origin_and_data(tmp_path, mrc_path):
    tomo = read_volume(mrc_path)
    assert tomo.voxel_size == pytest.approx((13.7, 13.7, 13.7))
    assert tomo.origin == pytest.approx((30.0, 20.0, 10.0))  # (z, y, x) from header (x, y, z)
    assert tomo.metadata["mrc_header"]["mode"] == 2
    assert isinstance(tomo.data, np.memmap)
    out = write_mrc(tmp_path / "copy.mrc", tomo.data * 2, tomo.voxel_size, tomo.origin)
    with mrcfile.open(out) as mrc:
        assert mrc.voxel_size.x == pytest.approx(13.7) and mrc.header.origin.x == 10.0
        np.testing.assert_array_equal(mrc.data, np.asarray(tomo.data) * 2)
        assert mrc.data.dtype == np.float32


def test_an_unknown_voxel_size_stays_unknown(tmp_path):
    from napari_nmsg._reader import read_tomograms

    path = tmp_path / "isonet.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 5, 6), np.float32))
        mrc.voxel_size = 0.0
    tomo = read_volume(path)
    assert tomo.voxel_size == (0.0, 0.0, 0.0)
    out = write_mrc(tmp_path / "out.mrc", tomo.data, tomo.voxel_size, tomo.origin)
    with mrcfile.open(out) as mrc:
        assert mrc.voxel_size.x == mrc.voxel_size.z == 0.0
    assert read_tomograms(path)[0][1]["scale"] == (1.0, 1.0, 1.0)  # napari needs > 0


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float32])
def test_every_common_mrc_mode_is_read(tmp_path, dtype):
    data = (np.arange(16 * 16 * 16) % 100).reshape(16, 16, 16).astype(dtype)
    path = tmp_path / f"{np.dtype(dtype).name}.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
    tomo = read_volume(path)
    # mrcfile stores uint8 as mode 6 (uint16): MRC2014's mode 0 is signed
    assert tomo.data.dtype == (np.uint16 if dtype is np.uint8 else dtype)
    np.testing.assert_array_equal(tomo.data, data)


def test_tiff_is_read_with_voxel_size(tmp_path):
    data = np.random.default_rng(0).normal(size=(16, 20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "t.tif", data, imagej=True, resolution=(1 / 1.5, 1 / 1.5),
                     metadata={"spacing": 1.5, "unit": "nm"})  # fmt: skip
    tomo = read_volume(tmp_path / "t.tif")
    np.testing.assert_array_equal(tomo.data, data)
    assert tomo.voxel_size == pytest.approx((15.0, 15.0, 15.0))


def test_corrupt_truncated_missing_and_unknown_files_are_refused(tmp_path, mrc_path):
    (tmp_path / "garbage.mrc").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(InputError, match="cannot read"):
        read_volume(tmp_path / "garbage.mrc")
    truncated = tmp_path / "truncated.mrc"
    truncated.write_bytes(mrc_path.read_bytes()[: 1024 + 1000])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_volume(truncated)
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "absent.mrc")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown suffix"):
        read_volume(tmp_path / "notes.txt")


def test_writing_over_the_input_is_refused_and_leaves_it_intact(tmp_path, mrc_path):
    before = mrc_path.read_bytes()
    with pytest.raises(InputError, match="is the input file"):
        write_mrc(mrc_path, np.zeros((16, 16, 16)), protect=(mrc_path,))
    link = tmp_path / "alias.mrc"
    os.link(mrc_path, link)
    with pytest.raises(InputError, match="is the input file"):
        write_mrc(link, np.zeros((16, 16, 16)), protect=(mrc_path,))
    assert mrc_path.read_bytes() == before


def test_failed_streaming_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.mrc"
    with pytest.raises(RuntimeError), mrc_output(target, (16, 16, 16)) as out:
        out[:8] = 1.0
        raise RuntimeError("denoising crashed midway")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="does not exist"):
        write_mrc(tmp_path / "missing" / "out.mrc", np.zeros((16, 16, 16)))
    with pytest.raises(InputError, match=r"\.mrc"):
        write_mrc(tmp_path / "out.png", np.zeros((16, 16, 16)))
    (tmp_path / "file").write_text("")
    with pytest.raises((InputError, OutputError)):
        write_mrc(tmp_path / "file" / "out.mrc", np.zeros((16, 16, 16)))


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (1e-3, 1e4), (1e30, 3e30)])
def test_header_statistics_match_the_data(tmp_path, monkeypatch, scale, offset):
    """Computed slab by slab (several slabs here), they equal numpy's on the whole volume."""
    import napari_nmsg.io

    monkeypatch.setattr(napari_nmsg.io, "_STATS_VOXELS", 700)
    data = np.random.default_rng(0).normal(size=(9, 20, 30)) * scale + offset
    data = data.astype(np.float32)
    with mrc_output(tmp_path / "out.mrc", data.shape) as out:
        out[:] = data
    with mrcfile.open(tmp_path / "out.mrc") as mrc:
        header = mrc.header
        assert float(header.dmin) == data.min() and float(header.dmax) == data.max()
        np.testing.assert_allclose(float(header.dmean), data.mean(dtype=np.float64), rtol=1e-6)
        np.testing.assert_allclose(float(header.rms), data.std(dtype=np.float64), rtol=1e-5)


def test_another_librarys_warning_while_opening_is_not_a_problem_of_the_file(mrc_path, monkeypatch):
    """numpy 2.5 deprecates how mrcfile 1.5 sets array dtypes: that warning, raised while
    opening, must stay what it is, not become "<file>: ..." as a broken header does."""
    real = mrcfile.mmap

    def mmap_with_a_deprecation(*args, **kwargs):
        message = "Setting the dtype on a NumPy array has been deprecated"
        warnings.warn(message, FutureWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(mrcfile, "mmap", mmap_with_a_deprecation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_mrc(mrc_path)
    assert [w.category for w in caught] == [FutureWarning]
    assert not str(caught[0].message).startswith(mrc_path.name)


def test_a_slightly_broken_header_is_read_with_a_warning_naming_the_file(mrc_path):
    raw = bytearray(mrc_path.read_bytes())
    raw[208:212] = b"XXXX"  # the map ID ("MAP ") that permissive reading tolerates
    broken = mrc_path.with_name("broken.mrc")
    broken.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=r"^broken\.mrc: Map ID string not found"):
        tomo = read_mrc(broken)
    assert tomo.data.shape == read_mrc(mrc_path).data.shape
