"""Noise learned where the user marked the background (a painted mask), not where the
automatic search looks: engine, CLI and provenance, on real MRC files."""

from __future__ import annotations

import json

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


def test_batch_offers_no_background_mask_rather_than_ignoring_it(tmp_path, slab, capsys):
    tomo = write_mrc(tmp_path / "tomo.mrc", slab.noisy, (10.0,) * 3)
    mask = write_mrc(tmp_path / "ice.mrc", np.ones(slab.noisy.shape, np.float32), (10.0,) * 3)
    with pytest.raises(SystemExit) as stop:
        cli.main(["batch", str(tomo), "-o", str(tmp_path / "out"), "--background", str(mask)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments: --background" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
