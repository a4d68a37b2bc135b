import numpy as np
import pytest

from napari_nmsg import denoise
from napari_nmsg.engine.volume import (
    NormalisedVolume,
    detect_wedge_axis,
    fit_normalisation,
    validate_volume,
)
from napari_nmsg.errors import InputError


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((32, 32), np.float32), "2D image"),
        (np.zeros((20, 20, 20, 3), np.float32), "RGB"),
        (np.zeros((2, 20, 20, 20), np.float32), "expected a 3D volume"),
        (np.zeros((8, 32, 32), np.float32), "too small"),
        (np.ones((20, 20, 20), np.float32), "constant"),
        (np.zeros((20, 20, 20), np.complex64), "unsupported voxel type"),
    ],
)
def test_bad_volumes_are_refused_with_a_specific_message(array, message):
    with pytest.raises(InputError, match=message):
        validate_volume(array)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_counted_and_refused(bad):
    volume = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    volume[3, 4, 5] = volume[7, 8, 9] = bad
    with pytest.raises(InputError, match="2 NaN/Inf voxels"):
        validate_volume(volume)


def test_wedge_axis_is_the_thinnest_and_canonical_view_puts_it_first():
    raw = np.random.default_rng(0).normal(size=(40, 20, 30)).astype(np.float32)
    assert detect_wedge_axis(raw.shape) == 1
    norm = fit_normalisation(raw)
    view = NormalisedVolume(raw, norm)
    assert view.shape == (20, 40, 30)
    block = view.read((slice(2, 4), slice(0, 5), slice(1, 2)))
    expected = (np.moveaxis(raw, 1, 0)[2:4, 0:5, 1:2] - norm.offset) / norm.scale
    np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(view.to_raw_scale(block), np.moveaxis(raw, 1, 0)[2:4, 0:5, 1:2],
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_normalisation_is_robust_to_a_few_extreme_voxels():
    raw = np.random.default_rng(1).normal(3.0, 2.0, size=(32, 32, 32)).astype(np.float32)
    clean = fit_normalisation(raw)
    raw[0, 0, :10] = 1e6  # e.g. a gold bead or a hot pixel row
    spiky = fit_normalisation(raw)
    assert abs(spiky.offset - 3.0) < 0.1 and abs(spiky.scale - 2.0) < 0.1
    assert abs(spiky.scale - clean.scale) < 0.02


def test_huge_intensities_denoise_like_unit_ones(small_tomogram, tiny_config):
    """Values near float32's range must not overflow: output scales with the input."""
    base = small_tomogram.noisy
    small = denoise(base, config=tiny_config.replace(noise_model="spectral"))
    huge = denoise(base * np.float32(1e30), config=tiny_config.replace(noise_model="spectral"))
    assert np.isfinite(huge).all()
    np.testing.assert_allclose(huge / 1e30, small, rtol=1e-3, atol=1e-3 * np.abs(small).max())


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.float16])
def test_integer_and_half_volumes_denoise_to_float32(small_tomogram, tiny_config, dtype):
    noisy = small_tomogram.noisy
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        span = 0.8 * (info.max - info.min) / (noisy.max() - noisy.min())
        mid = (int(info.max) + int(info.min)) / 2
        volume = np.round((noisy - noisy.mean()) * span + mid).astype(dtype)
    else:
        volume = noisy.astype(dtype)
    out = denoise(volume, config=tiny_config.replace(noise_model="spectral"))
    assert out.dtype == np.float32 and out.shape == volume.shape and np.isfinite(out).all()
    # same intensity scale as the input
    assert abs(float(np.median(out)) - float(np.median(volume.astype(np.float32)))) < 0.2 * float(
        volume.astype(np.float32).std()
    )
