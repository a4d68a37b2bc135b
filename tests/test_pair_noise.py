"""Where the noise patches hold signal, the pairs recorrupt the low band less where the
volume holds signal (``pair_noise_shrinkage``); elsewhere they keep the learned model."""

import numpy as np
import pytest
import torch

from napari_nmsg import fit_denoiser
from napari_nmsg.engine import NMSGConfig, pair_noise
from napari_nmsg.engine.noise_learning import whole_volume_boxes
from napari_nmsg.engine.noise_model import frequency_radius, kernel_for_spectrum, kernel_spectrum
from napari_nmsg.engine.pair_noise import (
    SHRINK_BELOW,
    r2r_shrinkage,
    volume_spectrum,
)
from napari_nmsg.engine.pipeline import prepare_volume
from napari_nmsg.simulate import simulate_tomogram

SIZE = 32


def _band_mean(values: np.ndarray, lo: float, hi: float) -> float:
    radius = frequency_radius(values.shape[0])
    return float(values[(radius > lo) & (radius < hi)].mean())


def test_the_kernel_spectrum_inverts_the_kernel_of_a_spectrum():
    radius = frequency_radius(SIZE)
    spectrum = 1 / (0.05 + radius)
    assert kernel_spectrum(kernel_for_spectrum(spectrum)) == pytest.approx(spectrum, rel=1e-4)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_shrinkage_is_the_wiener_ratio_below_its_band_and_one_elsewhere(alpha):
    radius = frequency_radius(SIZE)
    noise = np.ones((SIZE,) * 3)
    volume = np.where(radius < 0.3, 5.0, 1.0)  # signal four times the noise up to 0.3
    shrink = r2r_shrinkage(volume, noise, alpha)
    # S / P = 0.8 where the 3³ smoothing sees only the signal's bins
    assert _band_mean(shrink, 0.02, 0.08) == pytest.approx(1 / (1 + 0.8 * alpha**2))
    assert np.all(shrink[radius >= SHRINK_BELOW] == 1.0)  # the signal above stays noise
    assert np.all(r2r_shrinkage(noise, noise, alpha) == 1.0)  # no signal, no shrinkage
    # less power than the model's noise is no signal either; P of 0 does not divide by 0
    assert np.all(r2r_shrinkage(0.5 * noise * (radius > 0), noise, alpha) == 1.0)
    lowest = 1 / (1 + alpha**2)
    assert shrink.min() >= lowest - 1e-12


def test_a_rare_strong_object_stays_out_of_the_volume_spectrum(monkeypatch):
    noise = np.random.default_rng(0).normal(size=(48, 48, 48)).astype(np.float32)
    bead = noise.copy()
    bead[20:28, 20:28, 20:28] += 6.0  # a gold bead: strong, and in few boxes

    def low_band(volume: np.ndarray) -> float:
        boxes = whole_volume_boxes([prepare_volume(volume, NMSGConfig())], 8, seed=0)
        return _band_mean(volume_spectrum(boxes), 0.0, SHRINK_BELOW)

    assert low_band(bead) / low_band(noise) == pytest.approx(1.0, abs=0.1)
    monkeypatch.setattr(pair_noise, "OUTLIER_VARIANCE", np.inf)
    assert low_band(bead) / low_band(noise) > 1.5  # what the bead's boxes would add


@pytest.fixture(scope="module")
def thick_slab():
    """48³ crowded specimen through 90 % of Z: its flattest boxes hold signal."""
    return simulate_tomogram((48, 48, 48), snr=0.1, slab_fraction=0.9, crowding=3, seed=5)


def test_capped_patches_give_pairs_less_low_band_noise_where_the_volume_holds_signal(thick_slab):
    shrunk = fit_denoiser(thick_slab.noisy, _config(pair_noise_shrinkage=True))
    learned = fit_denoiser(thick_slab.noisy, _config(pair_noise_shrinkage=False))
    power, before = _power(shrunk), _power(learned)

    def ratio(lo: float, hi: float) -> float:
        return _band_mean(power, lo, hi) / _band_mean(before, lo, hi)

    assert 0.5 < ratio(0.0, SHRINK_BELOW) < 0.75  # 0.61: the slab holds signal
    assert ratio(SHRINK_BELOW + 0.02, 0.5) == pytest.approx(1.0, abs=0.02)


def test_uncapped_patches_keep_the_learned_noise_for_the_pairs(thick_slab):
    plain = fit_denoiser(thick_slab.noisy, _config(pair_noise_shrinkage=False, separable_cap=False))
    asked = fit_denoiser(thick_slab.noisy, _config(pair_noise_shrinkage=True, separable_cap=False))
    assert torch.equal(asked.noise_model.kernel, plain.noise_model.kernel)


def _config(**settings) -> NMSGConfig:
    defaults = {"separable_cap": True, "train_steps": 2, "crop": 16, "tile": 16, "overlap": 4}
    return NMSGConfig(**{**defaults, **settings})


def _power(model) -> np.ndarray:
    return kernel_spectrum(model.noise_model.kernel.numpy())
