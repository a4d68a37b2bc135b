"""Noise learned where the user marked the background (a painted mask), not where the
automatic search looks: engine, CLI, batch and provenance, on real MRC files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_nmsg import cli, learn_noise
from napari_nmsg.batch import sidecar_path
from napari_nmsg.engine import NMSGConfig
from napari_nmsg.engine import noise_patches as patches_module
from napari_nmsg.engine.noise_learning import AUTOMATIC
from napari_nmsg.engine.pipeline import prepare_volume
from napari_nmsg.errors import InputError
from napari_nmsg.io import write_mrc
from napari_nmsg.simulate import simulate_tomogram

CONFIG = NMSGConfig(noise_model="spectral", patch_size=12, max_patches=64)
FAST = ["--steps", "3", "--crop", "16", "--tile", "16", "--overlap", "4", "-q"]


@pytest.fixture(scope="module")
def slab():
    """48³ with the specimen slab in the middle half of Z (12..36)."""
    return simulate_tomogram((48, 48, 48), snr=0.1, seed=5)


def marked(shape: tuple[int, ...], region: tuple[slice, ...]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[region] = 1
    return mask


def inside(mask: np.ndarray, corner, size: int) -> bool:
    return bool(mask[tuple(slice(c, c + size) for c in corner)].all())


@pytest.mark.parametrize("score_voxels", [1 << 24, 20_000])  # full resolution, binned
def test_patches_come_only_from_the_marked_region(slab, monkeypatch, score_voxels):
    """Marked inside the specimen slab, where the automatic search would not look."""
    monkeypatch.setattr(patches_module, "_SCORE_VOXELS", score_voxels)
    mask = marked(slab.noisy.shape, (slice(14, 34), slice(4, 44), slice(4, 44)))
    automatic = learn_noise(slab.noisy, CONFIG).patches
    learning = learn_noise(slab.noisy, CONFIG, background=mask)
    found = learning.patches
    assert len(found.patches) >= patches_module.MIN_PATCHES
    assert all(inside(mask, c, found.patch_size) for c in found.corners)
    assert "from the marked background" in found.note
    in_mask = [inside(mask, c, automatic.patch_size) for c in automatic.corners]
    assert np.mean(in_mask) <= 0.25  # the search looks mostly in the ice around the slab
    # the comparison figure: the automatic search's model on the marked held-out patches
    assert set(learning.fidelity) == {"spectral", AUTOMATIC}
    assert learning.fidelity[AUTOMATIC]["log_psd_error"] > 0


def test_thickness_along_y_marks_in_the_files_own_axes(slab):
    """An IMOD-style volume (thickness along Y): the mask is in the file's axes."""
    volume = np.ascontiguousarray(np.swapaxes(slab.noisy, 0, 1))
    mask = marked(volume.shape, (slice(4, 44), slice(0, 16), slice(4, 44)))  # y < 16: ice
    source = prepare_volume(volume, CONFIG.replace(wedge_axis=1), background=mask)
    found = patches_module.extract_noise_patches(source, 12, 64)
    canonical = np.swapaxes(mask, 0, 1)  # corners are wedge-axis-first
    assert all(inside(canonical, c, found.patch_size) for c in found.corners)

    thin = marked(volume.shape, (slice(4, 44), slice(0, 10), slice(4, 44)))  # 10 thick
    found = patches_module.extract_noise_patches(
        prepare_volume(volume, CONFIG.replace(wedge_axis=1), background=thin), 16, 64
    )
    assert found.patch_size == 8 and "mark regions at least 16 voxels across" in found.note


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.ones((48, 48, 40), np.uint8), "has shape"),
        (np.zeros((48, 48, 48), np.uint8), "marks no voxel"),
        (marked((48, 48, 48), (slice(20, 25), slice(20, 25), slice(20, 25))), r"holds no 12³ box"),
    ],
)
def test_unusable_masks_are_one_clear_error(slab, mask, message):
    with pytest.raises(InputError, match=message):
        learn_noise(slab.noisy, CONFIG, background=mask)


def test_cli_learns_and_denoises_in_the_marked_background(tmp_path, slab, capsys):
    tomo = write_mrc(tmp_path / "tomo.mrc", slab.noisy, (10.0,) * 3)
    mask = marked(slab.noisy.shape, (slice(0, 12), slice(None), slice(None)))
    mask_path = write_mrc(tmp_path / "ice.mrc", mask.astype(np.float32), (10.0,) * 3)

    assert cli.main(["learn-noise", str(tomo), "--background", str(mask_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "from the marked background" in out and AUTOMATIC in out

    output = tmp_path / "out.mrc"
    argv = ["denoise", str(tomo), "-o", str(output), "--background", str(mask_path), *FAST]
    assert cli.main(argv) == 0
    record = json.loads(sidecar_path(output).read_text())
    assert record["provenance"]["noise_model"]["background"] == "ice.mrc"

    small = write_mrc(tmp_path / "small.mrc", mask[:, :, :40].astype(np.float32), (10.0,) * 3)
    assert cli.main(["denoise", str(tomo), "-o", str(tmp_path / "o2.mrc"),
                     "--background", str(small), *FAST]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "small.mrc has shape (48, 48, 40)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o2.mrc").exists()


def read_mrc(path) -> np.ndarray:
    with mrcfile.open(path, permissive=False) as mrc:
        return mrc.data.copy()


def batch_summary(outdir) -> dict[str, dict]:
    payload = json.loads((outdir / "summary.json").read_text())
    return {Path(item["input"]).name: item for item in payload["items"]}


def test_batch_learns_each_tomogram_in_its_own_mask_and_resumes_on_the_masks(
    tmp_path, slab, capsys
):
    """A missing mask fails its tomogram alone; an edited mask redoes its tomogram, a
    touched one with the same bytes does not; the mask reaches the noise learning."""
    folder = tmp_path / "tomos"
    folder.mkdir()
    tomos = [write_mrc(folder / f"t{i}.mrc", slab.noisy, (10.0,) * 3) for i in range(2)]
    ice = marked(slab.noisy.shape, (slice(0, 12), slice(None), slice(None))).astype(np.float32)
    write_mrc(folder / "t0_ice.mrc", ice, (10.0,) * 3)
    out = tmp_path / "out"
    argv = ["batch", *map(str, tomos), "-o", str(out), "--background", "{stem}_ice.mrc",
            "--workers", "1", *FAST]  # fmt: skip

    assert cli.main(argv) == 3
    items = batch_summary(out)
    assert items["t0.mrc"]["status"] == "done"
    assert items["t0.mrc"]["background"] == str(folder / "t0_ice.mrc")
    assert items["t1.mrc"]["status"] == "failed"
    assert items["t1.mrc"]["error"] == (
        f"cannot read background mask {folder / 't1_ice.mrc'}: No such file or directory"
    )
    record = json.loads(sidecar_path(out / "t0.mrc").read_text())
    assert record["provenance"]["noise_model"]["background"] == "t0_ice.mrc"
    assert record["background"]["blake2b"] and record["background"]["size"] > ice.nbytes

    write_mrc(folder / "t1_ice.mrc", ice, (10.0,) * 3)
    first = (out / "t0.mrc").stat().st_mtime_ns
    assert cli.main(argv) == 0
    items = batch_summary(out)
    assert [items[f"t{i}.mrc"]["status"] for i in range(2)] == ["skipped", "done"]
    assert (out / "t0.mrc").stat().st_mtime_ns == first
    masked = read_mrc(out / "t0.mrc")
    assert np.array_equal(read_mrc(out / "t1.mrc"), masked)  # same data, mask and seed

    os.utime(folder / "t0_ice.mrc")  # touched: same bytes
    ice[:, :4] = 0  # edited: another region marked
    write_mrc(folder / "t1_ice.mrc", ice, (10.0,) * 3)
    assert cli.main(argv) == 0
    items = batch_summary(out)
    assert [items[f"t{i}.mrc"]["status"] for i in range(2)] == ["skipped", "done"]
    assert (out / "t0.mrc").stat().st_mtime_ns == first
    assert not np.array_equal(read_mrc(out / "t1.mrc"), masked)  # learned in the new mask

    assert cli.main([a for a in argv if a not in ("--background", "{stem}_ice.mrc")]) == 0
    items = batch_summary(out)  # without masks, nothing made with one is still valid
    assert [items[f"t{i}.mrc"]["status"] for i in range(2)] == ["done", "done"]
    assert items["t0.mrc"]["background"] is None
    assert not np.array_equal(read_mrc(out / "t0.mrc"), masked)


def test_batch_fits_the_shared_model_in_the_chosen_tomograms_masks(tmp_path, slab):
    """--fit-on 2 of 3 chooses t0 and t1: t1's mask does not fit it, so the fit leaves it
    out; t2's mask is missing, which does not matter, as t2 is only denoised. An edited
    mask refits the shared model."""
    folder = tmp_path / "tomos"
    folder.mkdir()
    tomos = [write_mrc(folder / f"t{i}.mrc", slab.noisy, (10.0,) * 3) for i in range(3)]
    ice = marked(slab.noisy.shape, (slice(0, 12), slice(None), slice(None))).astype(np.float32)
    write_mrc(folder / "t0_ice.mrc", ice, (10.0,) * 3)
    write_mrc(folder / "t1_ice.mrc", ice[:, :, :40], (10.0,) * 3)
    out = tmp_path / "out"
    argv = ["batch", *map(str, tomos), "-o", str(out), "--background", "{stem}_ice.mrc",
            "--fit-on", "2", "--workers", "1", *FAST]  # fmt: skip

    assert cli.main(argv) == 0
    payload = json.loads((out / "summary.json").read_text())
    shared = payload["shared_model"]
    assert [u["path"] for u in shared["used"]] == [str(tomos[0])]
    assert shared["used"][0]["background"] == str(folder / "t0_ice.mrc")
    assert "t1_ice.mrc has shape (48, 48, 40)" in shared["unusable"][str(tomos[1])]
    assert [item["status"] for item in payload["items"]] == ["done"] * 3
    assert all(item["background"] is None for item in payload["items"])
    first = read_mrc(out / "t2.mrc")

    assert cli.main(argv) == 0
    payload = json.loads((out / "summary.json").read_text())
    assert payload["shared_model"]["reused"]
    assert [item["status"] for item in payload["items"]] == ["skipped"] * 3

    ice[:, :4] = 0
    write_mrc(folder / "t0_ice.mrc", ice, (10.0,) * 3)
    assert cli.main(argv) == 0
    payload = json.loads((out / "summary.json").read_text())
    assert not payload["shared_model"]["reused"]
    assert payload["shared_model"]["model_blake2b"] != shared["model_blake2b"]
    assert [item["status"] for item in payload["items"]] == ["done"] * 3
    assert not np.array_equal(read_mrc(out / "t2.mrc"), first)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--background", "ice.mrc"], "names one file for every tomogram"),
        (["--background", "{name}_ice.mrc"], "only {stem} (the tomogram's name) can be"),
        (["--background", "{stem}.mrc"], "tomo.mrc itself as its mask"),
        (["--background", "../out/{stem}.mrc"], "would replace the background mask of"),
        (["--background", "{stem}_ice.mrc", "--model", "m.pt"], "with --model none is learned"),
    ],
)
def test_batch_refuses_masks_it_cannot_use_before_anything_is_created(
    tmp_path, slab, capsys, extra, message
):
    folder = tmp_path / "in"
    folder.mkdir()
    tomo = write_mrc(folder / "tomo.mrc", slab.noisy, (10.0,) * 3)
    assert cli.main(["batch", str(tomo), "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "out").exists()
