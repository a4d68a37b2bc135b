"""OME-Zarr in and out: the CZ cryoET data portal's layout read by level and by voxel size,
pyramids written atomically, bad stores refused in one line, inputs never touched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_nmsg import cli
from napari_nmsg._api import denoise_file
from napari_nmsg.batch import remove_stale_temp_files
from napari_nmsg.batch.resume import file_digest, file_fingerprint, sidecar_path
from napari_nmsg.engine import Progress, load_model
from napari_nmsg.errors import InputError
from napari_nmsg.io import read_volume, write_mrc
from napari_nmsg.simulate import simulate_tomogram
from napari_nmsg.zarr_io import CHUNKS, zarr_output

zarr = pytest.importorskip("zarr")
PORTAL_VOXEL = 13.48  # Å, as in the portal's VoxelSpacing13.48 folders


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return simulate_tomogram((32, 40, 48), snr=0.1, seed=5).noisy.astype(np.float32)


def portal_store(path: Path, volume: np.ndarray, voxel: float = PORTAL_VOXEL) -> Path:
    """An OME-NGFF 0.4 image as the portal serves it (zarr v2, levels "0", "1", "2" with
    scales voxel × 1, 2, 4 in angstrom, no translation), metadata by ome-zarr-py's writer."""
    writer = pytest.importorskip("ome_zarr.writer")
    from ome_zarr.format import FormatV04

    path.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    datasets, level = [], volume
    for k in range(3):
        array = group.create_array(str(k), shape=level.shape, dtype="float32", chunks=(16,) * 3)
        array[:] = level
        scale = {"type": "scale", "scale": [voxel * 2**k] * 3}
        datasets.append({"path": str(k), "coordinateTransformations": [scale]})
        level = level[::2, ::2, ::2]
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"]
    writer.write_multiscales_metadata(group, datasets, fmt=FormatV04(), axes=axes)
    return path


def state(path: Path) -> tuple[dict, str]:
    """What must not change in an input: every file's size and mtime, and the bytes."""
    return file_fingerprint(path), file_digest(path)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.part"))


def test_round_trip_mrc_zarr_mrc_keeps_data_voxel_size_and_origin(tmp_path, volume):
    src = write_mrc(tmp_path / "in.mrc", volume, (9.0, 7.5, 7.5), (10.0, 20.0, 30.0))
    tomo = read_volume(src)
    with zarr_output(tmp_path / "mid.zarr", volume.shape, tomo.voxel_size, tomo.origin) as out:
        for z in range(0, volume.shape[0], 5):  # slab by slab, as inference writes
            out[z : z + 5] = tomo.data[z : z + 5]
    mid = read_volume(tmp_path / "mid.zarr")
    assert isinstance(mid.data, zarr.Array)  # lazy: slices read chunks, nothing loaded whole
    assert mid.data.chunks == (4, 40, 48)  # CHUNKS, clipped to the volume
    assert mid.voxel_size == (9.0, 7.5, 7.5) and mid.origin == (10.0, 20.0, 30.0)
    back = write_mrc(tmp_path / "back.mrc", mid.data[:], mid.voxel_size, mid.origin)
    again = read_volume(back)
    np.testing.assert_array_equal(again.data, volume)
    assert again.voxel_size == (9.0, 7.5, 7.5) and again.origin == (10.0, 20.0, 30.0)
    assert CHUNKS[1:] == (256, 256)


def test_portal_layout_is_read_at_level_0_and_by_voxel_size(tmp_path, volume):
    store = portal_store(tmp_path / "VoxelSpacing13.48/CanonicalTomogram/run1.zarr", volume)
    top = read_volume(store)
    assert top.data.shape == volume.shape and top.voxel_size == (PORTAL_VOXEL,) * 3
    assert top.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(top.data[3:5], volume[3:5])
    for asked, level in [("1", 1), ("26.96A", 1), ("22Å", 1), ("8A", 0), ("100a", 2)]:
        tomo = read_volume(store, level=asked)
        assert tomo.metadata["ome_zarr"]["level"] == level
        assert tomo.voxel_size == pytest.approx((PORTAL_VOXEL * 2**level,) * 3)
        assert tomo.data.shape == tuple(n >> level for n in volume.shape)


def test_units_and_translations_become_angstrom(tmp_path, volume):
    """NGFF 0.5 (zarr v3) as ome-zarr-py writes it by default, in nanometres, with the
    translations of its downsampled levels."""
    writer = pytest.importorskip("ome_zarr.writer")
    path = tmp_path / "nm.zarr"
    writer.write_image(
        volume, zarr.open_group(path, mode="w"), scale_factors=[{"z": 2, "y": 2, "x": 2}],
        axes="zyx", scale={"z": 2.0, "y": 1.0, "x": 1.0},
        axes_units={a: "nanometer" for a in "zyx"},
    )  # fmt: skip
    tomo = read_volume(path, level=1)
    assert tomo.voxel_size == pytest.approx((40.0, 20.0, 20.0))
    assert tomo.origin == pytest.approx((10.0, 5.0, 5.0))


def test_zarr_to_mrc_fits_on_the_lazy_store_and_leaves_it_untouched(tmp_path, volume, capsys):
    store = portal_store(tmp_path / "run1.zarr", volume)
    before = state(store)
    out = tmp_path / "out.mrc"
    fast = ["--steps", "3", "--crop", "16", "--tile", "16", "--overlap", "4", "-q"]
    assert cli.main(["denoise", str(store), "-o", str(out), "--level", "13A", *fast]) == 0
    assert "input: level 0 of 3 of run1.zarr" in capsys.readouterr().out
    assert state(store) == before
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == volume.shape and np.isfinite(mrc.data).all()
        assert float(mrc.voxel_size.x) == pytest.approx(PORTAL_VOXEL)


def test_levels_output_has_doubling_scales_and_block_means(tmp_path, mrc_path, tiny_model_path):
    reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    out = tmp_path / "out.zarr"
    model = ["--model", str(tiny_model_path)]
    args = ["denoise", str(mrc_path), "-o", str(out), *model, "--levels", "3"]
    assert cli.main([*args, "-q"]) == 0
    node = next(iter(reader.Reader(parse_url(out))()))  # ome-zarr-py reads what we wrote
    assert [a["unit"] for a in node.metadata["axes"]] == ["angstrom"] * 3
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [pytest.approx([13.7 * 2**k] * 3) for k in range(3)]
    levels = [np.asarray(d) for d in node.data]
    assert [lv.shape for lv in levels] == [(32, 32, 32), (16, 16, 16), (8, 8, 8)]
    blocks = levels[0].reshape(16, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(levels[1], blocks, rtol=1e-6)
    with mrcfile.open(mrc_path) as src:
        assert read_volume(out).origin == tuple(float(src.header.origin[a]) for a in "zyx")
    assert cli.main([*args, "-q"]) == 0  # a second run replaces the store, leaves nothing
    assert leftovers(tmp_path) == [] and read_volume(out, level=2).data.shape == (8, 8, 8)


def _store_without_metadata(path: Path) -> None:
    zarr.open_group(path, mode="w", zarr_format=2).create_array("0", shape=(20,) * 3, dtype="f4")


def _store_with_axes(path: Path, axes: str, unit: str = "angstrom") -> None:
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("0", shape=(20,) * len(axes), dtype="f4")[:] = 1.0
    kinds = {"c": "channel", "t": "time"}
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": a, "type": kinds.get(a, "space"), "unit": unit} for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * len(axes)}]}],
    }]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (_store_without_metadata, [], "no OME-NGFF multiscales metadata"),
        (lambda p: _store_with_axes(p, "czyx"), [], "axes are c, z, y, x"),
        (lambda p: _store_with_axes(p, "yx"), [], "axes are y, x"),
        (lambda p: _store_with_axes(p, "zyx", "parsec"), [], "axis unit 'parsec'"),
        (lambda p: _store_with_axes(p, "zyx"), ["--level", "3"], "level 3 does not exist"),
        (lambda p: _store_with_axes(p, "zyx"), ["--level", "8x"], "neither a level number"),
        (lambda p: None, [], "no such OME-Zarr folder"),
    ],
)
def test_bad_stores_exit_2_in_one_line_and_write_nothing(
    tmp_path, capsys, tiny_model_path, make, extra, message
):
    store = tmp_path / "bad.zarr"
    make(store)
    before = state(store) if store.exists() else None
    out = tmp_path / "out.zarr"
    argv = ["denoise", str(store), "-o", str(out), "--model", str(tiny_model_path), "-q", *extra]
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's own checks (--level's syntax) exit from parse_args
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and leftovers(tmp_path) == []
    assert (state(store) if store.exists() else None) == before


def test_an_output_over_around_or_inside_the_input_store_is_refused(tmp_path, volume, capsys):
    store = portal_store(tmp_path / "run1.zarr", volume)
    before = state(store)
    for out in (store, store / "inner.zarr", tmp_path / "other.mrc"):
        argv = ["denoise", str(store), "-o", str(out), "--levels", "2", "-q"]
        assert cli.main(argv) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "is the input" in errors[0] and "inside the input" in errors[1]
    assert "--levels 2 needs an OME-Zarr (.zarr) output" in errors[2]
    (tmp_path / "folder.zarr").mkdir()
    (tmp_path / "folder.zarr" / "notes.txt").write_text("mine")
    assert cli.main(["denoise", str(store), "-o", str(tmp_path / "folder.zarr"), "-q"]) == 2
    assert "is not a zarr store" in capsys.readouterr().err
    assert state(store) == before and (tmp_path / "folder.zarr" / "notes.txt").exists()


def test_an_interrupted_write_leaves_no_store(tmp_path, mrc_path, tiny_model_path):
    out = tmp_path / "out.zarr"
    seen = []

    def interrupt(event):
        if isinstance(event, Progress) and event.stage == "denoise":
            seen.extend(leftovers(tmp_path))  # the store being written, under its temporary name
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        denoise_file(mrc_path, out, model=load_model(tiny_model_path), on_event=interrupt, levels=2)
    assert seen and seen[0].startswith(".out.zarr.")
    assert not out.exists() and leftovers(tmp_path) == []
    assert not sidecar_path(out).exists()


def test_too_many_levels_are_refused_before_any_work(tmp_path, mrc_path):
    with pytest.raises(InputError, match="too many for a volume of shape"):
        denoise_file(mrc_path, tmp_path / "out.zarr", levels=7)
    assert os.listdir(tmp_path) == [mrc_path.name]


def test_a_store_fingerprint_sees_a_chunk_rewritten_and_its_digest_the_bytes(tmp_path, volume):
    store = portal_store(tmp_path / "run1.zarr", volume)
    fingerprint, digest = state(store)
    assert file_digest(shutil.copytree(store, tmp_path / "copy.zarr")) == digest
    chunk = next(p for p in sorted((store / "1").iterdir()) if not p.name.startswith("."))
    later = fingerprint["mtime_ns"] + 10**9
    os.utime(chunk, ns=(later, later))  # same bytes, rewritten: the quick check fails ...
    assert file_fingerprint(store) == fingerprint | {"mtime_ns": later}
    assert file_digest(store) == digest  # ... and the hash finds the bytes unchanged
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\1")
    assert file_digest(store) != digest


def test_stale_store_folders_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / ".a.zarr.x1y2.part" / "0" / "0").mkdir(parents=True)
    (tmp_path / ".b.zarr.x1y2.part").mkdir()
    assert remove_stale_temp_files(tmp_path, ["a.zarr", "a.zarr.nmsg.json"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == [".b.zarr.x1y2.part"]


def test_batch_reads_stores_resumes_and_writes_either_format(tmp_path, volume, tiny_model_path):
    stores = [portal_store(tmp_path / "tomos" / f"{n}.zarr", volume[:24]) for n in "ab"]
    out = tmp_path / "out"
    model = ["--model", str(tiny_model_path)]
    args = ["batch", str(tmp_path / "tomos" / "*.zarr"), "-o", str(out), *model]
    as_zarr = [*args, "--output-format", "zarr", "--levels", "2", "--level", "0", "-q"]
    assert cli.main(as_zarr) == 0
    for store in stores:
        written = read_volume(out / store.name, level=1)
        assert written.data.shape == (12, 20, 24)
        assert written.voxel_size == pytest.approx((2 * PORTAL_VOXEL,) * 3)
        sidecar = json.loads(sidecar_path(out / store.name).read_text())
        assert sidecar["input"]["blake2b"] == file_digest(store)
        assert sidecar["provenance"]["input"] == {
            "name": store.name, "blake2b": file_digest(store), "level": 0
        }  # fmt: skip
    # a chunk rewritten with the same bytes: re-hashed, skipped; other bytes: done again
    chunk = next(p for p in sorted((stores[0] / "0").iterdir()) if not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes())
    zarr.open_group(stores[1], mode="r+")["0"][0, 0, 0] = 1e3
    assert cli.main(as_zarr) == 0
    items = {
        Path(i["input"]).name: i for i in json.loads((out / "summary.json").read_text())["items"]
    }
    assert items["a.zarr"]["status"] == "skipped" and items["b.zarr"]["status"] == "done"
    assert cli.main([*args, "-q"]) == 0  # MRC by default
    with mrcfile.open(out / "a.mrc") as mrc:
        assert mrc.data.shape == (24, 40, 48)
