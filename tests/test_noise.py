import numpy as np
import pytest
import torch

from napari_nmsg import NMSGConfig, learn_noise
from napari_nmsg.engine.noise_model import (
    SpectralNoise,
    fft_conv3d,
    noise_fidelity,
    sample_patches,
    spectral_kernel,
)
from napari_nmsg.engine.noise_patches import extract_noise_patches
from napari_nmsg.engine.volume import NormalisedVolume, fit_normalisation
from napari_nmsg.simulate import simulate_tomogram


@pytest.fixture(scope="module")
def slab_tomogram():
    return simulate_tomogram((48, 48, 48), snr=0.1, seed=5)


def test_noise_patches_come_from_the_empty_ice_above_and_below_the_slab(slab_tomogram):
    volume = NormalisedVolume(slab_tomogram.noisy, fit_normalisation(slab_tomogram.noisy))
    found = extract_noise_patches(volume, patch_size=12, max_patches=64)
    assert len(found.patches) >= 8 and found.patch_size == 12
    assert "noise patches of 12³" in found.note
    # the slab is the middle half in Z (12..36); most patches should lie mostly outside it
    z_centres = found.corners[:, 0] + 6
    outside = (z_centres < 16) | (z_centres >= 32)
    assert outside.mean() >= 0.75
    assert np.allclose(found.patches.mean(axis=(1, 2, 3)), 0, atol=1e-5)


def test_patch_size_falls_back_when_the_volume_is_small():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(18, 40, 40)).astype(np.float32)
    found = extract_noise_patches(NormalisedVolume(raw, fit_normalisation(raw)), 32, 16)
    assert found.patch_size < 32
    assert "retrying" in found.note


@pytest.mark.parametrize("shape", [(12, 13, 14), (17, 19, 23)])
def test_fft_conv3d_matches_torch_conv3d(shape):
    """Also where the transforms are padded to faster lengths (13, 14, 17, 19, 23): the
    circular wrap-around must stay out of the valid part."""
    gen = torch.Generator().manual_seed(0)
    white = torch.randn((2, 1, *shape), generator=gen)
    kernel = torch.randn((5, 5, 5), generator=gen)
    expected = torch.nn.functional.conv3d(white, kernel[None, None])
    torch.testing.assert_close(fft_conv3d(white, kernel), expected, atol=1e-4, rtol=1e-4)


def test_spectral_noise_reuses_its_kernel_transform_until_the_kernel_changes():
    gen = torch.Generator().manual_seed(0)
    model = SpectralNoise(torch.randn((5, 5, 5), generator=gen))
    small = torch.randn((2, 1, 12, 12, 12), generator=gen)
    large = torch.randn((1, 1, 19, 19, 19), generator=gen)
    for white in (small, large, small):
        assert torch.equal(model(white), fft_conv3d(white, model.kernel))
    assert len(model.spectra) == 2  # one per padded size
    other = torch.randn((5, 5, 5), generator=gen)
    model.load_state_dict({"kernel": other})  # in place: the same tensor, new values
    assert torch.equal(model(small), fft_conv3d(small, other))
    assert len(model.spectra) == 1


def coloured_patches(rng: np.random.Generator, axis: int, count: int) -> np.ndarray:
    """Mean-free 16³ patches of noise filtered by [0.5, 1, 0.5] along ``axis`` (lag 1: 2/3)."""
    kernel = np.zeros((3, 3, 3), np.float32)
    kernel[tuple(slice(None) if a == axis else 1 for a in range(3))] = [0.5, 1.0, 0.5]
    white = torch.from_numpy(rng.normal(size=(count, 1, 18, 18, 18)).astype(np.float32))
    patches = fft_conv3d(white, torch.from_numpy(kernel))[:, 0].numpy()
    return patches - patches.mean(axis=(1, 2, 3), keepdims=True)


def test_spectral_model_reproduces_variance_and_correlation_of_coloured_noise():
    """Patches of known correlated noise: the model must match it, white noise must not."""
    rng = np.random.default_rng(1)
    real = coloured_patches(rng, axis=2, count=200)  # correlated along the last axis only
    train, held = real[:150], real[150:]
    model = SpectralNoise(torch.from_numpy(spectral_kernel(train)))
    generated = sample_patches(model, 64, 16, torch.Generator().manual_seed(2))
    fid = noise_fidelity(generated, held)
    assert abs(fid["variance_ratio"] - 1) < 0.05
    white_fid = noise_fidelity(rng.normal(size=generated.shape) * held.std(), held)
    assert fid["autocorr_error"] < 0.05 < 0.3 < white_fid["autocorr_error"]
    # the spectrum error has a floor from finite samples (0.09 here, 0.16 with the periodogram
    # kernel); white noise is far off
    assert fid["log_psd_error"] < 0.12 and white_fid["log_psd_error"] > 2 * fid["log_psd_error"]


def test_spectral_model_keeps_the_axial_correlation_that_a_periodogram_shortens():
    """16³ periodograms shrink lag-1 correlation by 15/16 (0.667 -> 0.625); the model must not."""
    real = coloured_patches(np.random.default_rng(3), axis=0, count=192)  # axial correlation
    model = SpectralNoise(torch.from_numpy(spectral_kernel(real)))
    assert model.kernel.shape == (32, 32, 32)
    generated = sample_patches(model, 96, 16, torch.Generator().manual_seed(4))
    axial = noise_fidelity(generated, real)["axial_autocorr"]
    assert abs(axial - 2 / 3) < 0.015  # the periodogram's kernel gives 0.625


def test_noise_models_generate_any_size_and_report_fidelity(small_tomogram, tiny_config):
    learned = learn_noise(small_tomogram.noisy, tiny_config)
    assert set(learned.fidelity) == {"spectral", "gan"}
    for figures in learned.fidelity.values():
        assert {"log_psd_error", "hist_error", "kurtosis", "axial_autocorr"} <= set(figures)
        assert 0.8 < figures["variance_ratio"] < 1.25
    noise = learned.noise_model.sample(1, (20, 24, 28), torch.Generator().manual_seed(0))
    assert noise.shape == (1, 1, 20, 24, 28)
    assert learned.real_examples.shape[1:] == learned.generated_examples.shape[1:]
    # calibrated to the spectral fit's power, which is close to the patches' own variance
    assert abs(noise.var().item() / learned.patches.patches.var() - 1) < 0.2


def test_gan_power_is_the_spectral_fits_where_the_cap_took_signal_out_of_the_patches():
    # crowded slab through 90 % of the thickness: the patches hold signal (their variance is
    # 1.06x the fit's here), which a GAN calibrated to the patches' raw variance added to
    # the inference pairs' noise (no amplitude map rescales those)
    sim = simulate_tomogram((48, 48, 48), snr=0.1, seed=5, slab_fraction=0.9, crowding=3.0)
    config = NMSGConfig(noise_model="gan", gan_steps=2, gan_batch=4, separable_cap=True)
    learned = learn_noise(sim.noisy, config)
    spectral = learned.spectral_model.voxel_variance()
    assert learned.patches.patches.var() > 1.04 * spectral
    drawn = learned.noise_model.sample(4, (32, 32, 32), torch.Generator().manual_seed(1))
    assert abs(drawn.var().item() / spectral - 1) < 0.02
