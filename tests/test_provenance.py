"""Every output says what made it: package version, settings, seed, noise model and its
fidelity, the quality estimate and the input's checksum, in the MRC labels, the sidecar and
the OME-Zarr attributes; ``--voxel-size`` replaces an unknown voxel size and says so."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest

from napari_nmsg import __version__
from napari_nmsg.batch.resume import file_digest, sidecar_path
from napari_nmsg.cli import main
from napari_nmsg.engine import load_model
from napari_nmsg.io import read_volume, write_mrc
from napari_nmsg.provenance import (
    ATTRS_KEY,
    LABEL_LENGTH,
    MRC_LABELS,
    build_provenance,
    mrc_labels,
    quality_label,
)


def denoise(src, out, model, *extra: str) -> int:
    return main(["denoise", str(src), "-o", str(out), "--model", str(model), "-q", *extra])


def test_labels_and_sidecar_record_what_made_the_output(tmp_path, mrc_path, tiny_model_path):
    out = tmp_path / "out.mrc"
    assert denoise(mrc_path, out, tiny_model_path, "--tile", "32") == 0
    model, digest = load_model(tiny_model_path), file_digest(mrc_path)
    with mrcfile.open(out) as mrc:
        labels = "\n".join(str(label) for label in mrc.get_labels())
    assert f"napari-nmsg {__version__}: denoised tomo.mrc" in labels
    assert f"input blake2b {digest}" in labels
    assert f"seed {model.config.seed}; spectral noise model: log-PSD error" in labels
    assert quality_label(model.quality.to_dict()) in labels
    assert "tile=32" in labels  # set by the user: not the model's, nor the preset's
    sidecar = json.loads(sidecar_path(out).read_text())
    record = sidecar["provenance"]
    assert record["package_version"] == __version__ == sidecar["package_version"]
    assert record["input"] == {"name": "tomo.mrc", "blake2b": digest}
    assert sidecar["input"]["blake2b"] == digest
    assert record["seed"] == model.config.seed and record["model"] == "given"
    assert record["noise_model"] == {"kind": "spectral", "fidelity": model.fidelity["spectral"]}
    assert record["quality_estimate"] == model.quality.to_dict() == sidecar["quality_estimate"]
    assert record["config"]["tile"] == 32 and record["changed_settings"]["tile"] == 32
    assert record["config"]["train_steps"] == model.config.train_steps


def test_zarr_attributes_hold_the_same_record(tmp_path, mrc_path, tiny_model_path):
    zarr = pytest.importorskip("zarr")
    out = tmp_path / "out.zarr"
    assert denoise(mrc_path, out, tiny_model_path) == 0
    attrs = zarr.open_group(out, mode="r").attrs.asdict()
    assert attrs[ATTRS_KEY] == json.loads(sidecar_path(out).read_text())["provenance"]
    assert attrs[ATTRS_KEY]["input"]["blake2b"] == file_digest(mrc_path)
    assert attrs["multiscales"][0]["version"] == "0.4"


def test_voxel_size_option_reaches_the_header_and_is_said(
    tmp_path, small_tomogram, tiny_model_path, capsys
):
    src = tmp_path / "isonet.mrc"
    with mrcfile.new(src) as mrc:  # IsoNet writes 0: unknown
        mrc.set_data(small_tomogram.noisy.astype(np.float32))
        mrc.voxel_size = 0.0
    given = tmp_path / "given.mrc"
    assert denoise(src, given, tiny_model_path, "--voxel-size", "13.48") == 0
    said = capsys.readouterr().out
    assert (
        "voxel size: 0 Å in the header (unknown); writing 13.48 Å as given by --voxel-size" in said
    )
    with mrcfile.open(given) as mrc:
        assert float(mrc.voxel_size.x) == float(mrc.voxel_size.z) == pytest.approx(13.48)
        assert any("voxel size 13.48 A as given" in str(label) for label in mrc.get_labels())
    assert json.loads(sidecar_path(given).read_text())["provenance"]["voxel_size"] == {
        "input": [0.0, 0.0, 0.0], "output": [13.48, 13.48, 13.48], "from": "given"
    }  # fmt: skip
    for unknown in (tmp_path / "unknown.mrc", tmp_path / "unknown.zarr"):
        assert denoise(src, unknown, tiny_model_path) == 0
        assert "0 Å in the header (unknown); the output says unknown too" in capsys.readouterr().out
        assert read_volume(unknown).voxel_size == (0.0, 0.0, 0.0)


def test_labels_fit_the_header_and_point_to_the_sidecar(tmp_path, tiny_model_path):
    model = load_model(tiny_model_path)
    applied = model.config.replace(
        tile=32, overlap=8, lambda_grad=0.1, lambda_gui=0.2, guidance_sigma=2.0, crop=24,
        sparsity_sigma=4.0, unet_width=16, train_steps=5, lr=0.001, ema_decay=0.9,
        alpha=1.5, patch_size=12, max_patches=100, batch_size=4, gan_steps=7, gan_width=8,
        gan_batch=8, local_amplitude=False, seed=7,
    )  # fmt: skip
    record = build_provenance(
        model, applied, input_path="tomogramm_ä.mrc", input_blake2b="0" * 40, fitted_here=True,
        input_voxel_size=(0.0,) * 3, voxel_size=(10.0, 10.0, 10.0), voxel_size_given=True,
    )  # fmt: skip
    labels = mrc_labels(record)
    assert len(labels) == MRC_LABELS
    assert all(len(label) <= LABEL_LENGTH and label.isascii() for label in labels)
    assert "tomogramm_?.mrc" in labels[0] and labels[-1].endswith("(all in the .nmsg.json)")
    out = write_mrc(tmp_path / "x.mrc", np.zeros((16, 16, 16), np.float32), labels=labels)
    with mrcfile.open(out) as mrc:  # mrcfile's own label and ours: all ten
        assert int(mrc.header.nlabl) == 10
