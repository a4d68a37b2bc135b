"""Shared fixtures: tiny simulated tomograms and fast settings (2-core CI budget)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from napari_nmsg.engine import NMSGConfig
from napari_nmsg.simulate import simulate_tomogram


@pytest.fixture(autouse=True)
def _scratch_in_tmp(tmp_path_factory, monkeypatch):
    """Output layers' scratch files go to a test folder, not the user's cache."""
    monkeypatch.setenv("NAPARI_NMSG_SCRATCH", str(tmp_path_factory.mktemp("scratch")))


@pytest.fixture(scope="session")
def small_tomogram():
    """A 32³ simulated tomogram at SNR 0.1 (noisy, halves, noiseless target)."""
    return simulate_tomogram((32, 32, 32), snr=0.1, seed=3)


@pytest.fixture
def tiny_config() -> NMSGConfig:
    """Settings that exercise every stage (the GAN too) in about a second."""
    return NMSGConfig(
        noise_model="gan", train_steps=4, gan_steps=2, gan_batch=4, crop=16, tile=16,
        overlap=4, preview_every=2,
    )  # fmt: skip


@pytest.fixture
def mrc_path(tmp_path, small_tomogram):
    """The small tomogram as a real MRC file with voxel size 13.7 Å and an origin."""
    path = tmp_path / "tomo.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(small_tomogram.noisy.astype(np.float32))
        mrc.voxel_size = 13.7
        mrc.header.origin = (10.0, 20.0, 30.0)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, small_tomogram):
    """A model fitted in three steps to the small tomogram, for tests that only apply one
    (inference then takes about a second)."""
    from napari_nmsg import fit_denoiser, save_model

    config = NMSGConfig(train_steps=3, crop=16, tile=16, overlap=4, inference_pairs=0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(fit_denoiser(small_tomogram.noisy, config), path)
    return path
