import numpy as np
import pytest

from napari_nmsg.io import read_volume, write_mrc
from napari_nmsg.mapped_pages import release_mapped_pages

pytestmark = pytest.mark.skipif(
    not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/status"
)


def _rss_file_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_released_pages_leave_rss_and_data_stays(tmp_path):
    volume = np.random.default_rng(0).normal(size=(64, 512, 512)).astype(np.float32)  # 64 MB
    write_mrc(tmp_path / "big.mrc", volume)
    mapped = read_volume(tmp_path / "big.mrc").data
    before = _rss_file_mb()
    checksum = float(mapped.sum(dtype=np.float64))  # touches every page
    assert _rss_file_mb() - before > 50
    assert release_mapped_pages(mapped[3:5])  # any view of the mapping releases all of it
    assert _rss_file_mb() - before < 10
    assert float(mapped.sum(dtype=np.float64)) == checksum


def test_written_pages_survive_release(tmp_path):
    out = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32,
                                    shape=(8, 256, 256))  # fmt: skip
    out[:] = 7.0
    assert release_mapped_pages(out)
    assert float(out.min()) == float(out.max()) == 7.0
    del out
    assert float(np.load(tmp_path / "o.npy").mean()) == 7.0


def test_ignores_plain_and_copy_on_write_arrays(tmp_path):
    assert not release_mapped_pages(np.zeros(10))
    np.save(tmp_path / "a.npy", np.zeros((4, 1024), np.float32))
    private = np.load(tmp_path / "a.npy", mmap_mode="c")
    private[:] = 3.0
    assert not release_mapped_pages(private)
    assert float(private.min()) == 3.0


def test_many_small_reads_of_a_mapped_volume_do_not_pile_up_in_rss(tmp_path, monkeypatch):
    """Training reads crops all over a tomogram: its pages must not stay resident."""
    from napari_nmsg.engine import volume as volume_module
    from napari_nmsg.engine.volume import Normalisation, NormalisedVolume

    volume = np.random.default_rng(1).normal(size=(64, 512, 512)).astype(np.float32)  # 64 MB
    write_mrc(tmp_path / "big.mrc", volume)

    def growth_mb(budget_mb: int) -> float:
        monkeypatch.setattr(volume_module, "_RELEASE_BYTES", budget_mb << 20)
        data = read_volume(tmp_path / "big.mrc").data
        source = NormalisedVolume(data, Normalisation(0, 1, 0))
        release_mapped_pages(data)
        before = _rss_file_mb()
        rng = np.random.default_rng(0)
        for _ in range(400):
            z, y, x = (int(rng.integers(0, n - 16)) for n in data.shape)
            source.read((slice(z, z + 16), slice(y, y + 16), slice(x, x + 16)))
        return _rss_file_mb() - before

    assert growth_mb(100_000) > 40  # never released: most of the file stays resident
    assert growth_mb(16) < 24  # a 16 MB budget for this 64 MB file (the default: 128 MB)


def test_looking_for_fill_keeps_few_pages_of_a_mapped_volume(tmp_path, monkeypatch):
    """The X faces touch a page of every row: the search must give them back as it goes."""
    from napari_nmsg.engine import volume as volume_module
    from napari_nmsg.engine.fill import detect_fill

    volume = np.random.default_rng(2).normal(size=(64, 512, 512)).astype(np.float32)  # 64 MB
    write_mrc(tmp_path / "big.mrc", volume)
    monkeypatch.setattr(volume_module, "_CHUNK_VOXELS", 4 * 512 * 512)  # slabs of 4 planes
    data = read_volume(tmp_path / "big.mrc").data
    release_mapped_pages(data)
    before, peak = _rss_file_mb(), 0.0
    real_release = release_mapped_pages

    def release_and_watch(array):
        nonlocal peak
        peak = max(peak, _rss_file_mb() - before)
        return real_release(array)

    monkeypatch.setattr("napari_nmsg.engine.fill.release_mapped_pages", release_and_watch)
    assert detect_fill(data) is None
    assert 0 < peak < 24  # a slab's pages at a time, not the 64 MB file
