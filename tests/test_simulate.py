"""Tests of the synthetic tomogram simulator (small volumes, each well under a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_nmsg.simulate import SimulatedTomogram, simulate_tomogram

VOLUMES = ("noisy", "even", "odd", "target", "phantom")
SHAPE = (48, 48, 48)


@pytest.fixture(scope="module")
def low_snr() -> SimulatedTomogram:
    return simulate_tomogram(SHAPE, snr=0.1, seed=1)


@pytest.fixture(scope="module")
def high_snr() -> SimulatedTomogram:
    return simulate_tomogram(SHAPE, snr=10.0, seed=1)


def _z_regions(nz: int, slab_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks over Z: whole slab, slab centre (half its thickness), empty ice (3-voxel margin)."""
    dist = np.abs(np.arange(nz) - (nz - 1) / 2)
    half = slab_fraction * nz / 2
    return dist <= half, dist < half / 2, dist > half + 3


def _psnr(image: np.ndarray, reference: np.ndarray) -> float:
    data_range = float(reference.max() - reference.min())
    return float(10 * np.log10(data_range**2 / np.mean((image - reference) ** 2)))


def test_shapes_dtypes_and_metadata() -> None:
    shape = (32, 40, 48)
    sim = simulate_tomogram(shape, snr=0.5, voxel_size=8.0)
    for name in VOLUMES:
        vol = getattr(sim, name)
        assert vol.shape == shape, name
        assert vol.dtype == np.float32, name
        assert vol.flags.c_contiguous, name
        assert np.isfinite(vol).all(), name
    assert sim.voxel_size == 8.0
    assert sim.snr == 0.5
    np.testing.assert_allclose(sim.tilt_angles, np.arange(-60.0, 61.0, 3.0))


def test_tilt_angles_are_symmetric_within_range() -> None:
    sim = simulate_tomogram((16, 16, 16), tilt_range=50.0, tilt_step=3.0)
    np.testing.assert_allclose(sim.tilt_angles, np.arange(-48.0, 49.0, 3.0))


def test_same_seed_is_bit_identical_and_seeds_differ() -> None:
    a = simulate_tomogram((32, 32, 32), seed=7)
    b = simulate_tomogram((32, 32, 32), seed=7)
    c = simulate_tomogram((32, 32, 32), seed=8)
    for name in VOLUMES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.phantom, c.phantom)
    assert not np.array_equal(a.noisy, c.noisy)


def test_even_odd_average_to_noisy(low_snr: SimulatedTomogram) -> None:
    mean = (low_snr.even + low_snr.odd) / 2
    np.testing.assert_allclose(mean, low_snr.noisy, rtol=0, atol=1e-4 * low_snr.noisy.std())


def test_phantom_is_confined_to_the_slab(low_snr: SimulatedTomogram) -> None:
    slab, _, empty = _z_regions(SHAPE[0])
    assert low_snr.phantom.min() >= 0
    assert low_snr.phantom[slab].max() > 0.5
    assert not low_snr.phantom[empty].any()


def test_empty_ice_holds_stationary_noise_only(low_snr: SimulatedTomogram) -> None:
    _, core, empty = _z_regions(SHAPE[0])
    central_x = slice(SHAPE[2] // 4, 3 * SHAPE[2] // 4)  # away from the truncated corners
    noise = (low_snr.noisy - low_snr.target)[..., central_x]
    target = low_snr.target[..., central_x]
    assert abs(noise[empty].mean()) < 0.02 * noise[empty].std()
    assert 0.8 < noise[empty].var() / noise[core].var() < 1.25
    # Only faint missing-wedge tails of the slab reach the empty ice (measured ~0.1).
    assert target[empty].std() < 0.3 * target[core].std()


def test_density_keeps_positive_contrast(low_snr: SimulatedTomogram) -> None:
    slab, _, _ = _z_regions(SHAPE[0])
    corr = np.corrcoef(low_snr.target[slab].ravel(), low_snr.phantom[slab].ravel())[0, 1]
    assert corr > 0.4


def test_snr_sets_noise_dominance(low_snr: SimulatedTomogram, high_snr: SimulatedTomogram) -> None:
    slab, _, _ = _z_regions(SHAPE[0])
    np.testing.assert_array_equal(low_snr.target, high_snr.target)
    low_noise = (low_snr.noisy - low_snr.target)[slab]
    high_noise = (high_snr.noisy - high_snr.target)[slab]
    assert low_noise.var() > 2 * low_snr.target[slab].var()
    assert high_noise.var() < 0.5 * high_snr.target[slab].var()


def test_structure_is_denoisable_and_half_noises_independent(low_snr: SimulatedTomogram) -> None:
    smoothed = ndimage.gaussian_filter(low_snr.noisy, 1.5)
    assert _psnr(smoothed, low_snr.target) > _psnr(low_snr.noisy, low_snr.target) + 3
    even_noise = (low_snr.even - low_snr.target).ravel()
    odd_noise = (low_snr.odd - low_snr.target).ravel()
    assert abs(np.corrcoef(even_noise, odd_noise)[0, 1]) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (15, 32, 32)}, "shape"),
        ({"shape": (32, 32)}, "shape"),
        ({"shape": (32.0, 32, 32)}, "shape"),
        ({"shape": 32}, "shape"),
        ({"snr": 0.0}, "snr"),
        ({"snr": -1.0}, "snr"),
        ({"snr": float("nan")}, "snr"),
        ({"tilt_range": 0.0}, "tilt_range"),
        ({"tilt_range": 91.0}, "tilt_range"),
        ({"tilt_step": 0.0}, "tilt_step"),
        ({"slab_fraction": 0.0}, "slab_fraction"),
        ({"slab_fraction": 1.5}, "slab_fraction"),
        ({"voxel_size": 0.0}, "voxel_size"),
        ({"defocus_um": -1.0}, "defocus_um"),
    ],
)
def test_invalid_inputs_raise(kwargs: dict, match: str) -> None:
    kwargs = {"shape": (16, 16, 16), **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_tomogram(**kwargs)


def test_shot_noise_halves_average_to_the_full_dose_and_follow_the_ice() -> None:
    def thin_over_thick(sim: SimulatedTomogram) -> float:
        noise = sim.noisy - sim.target  # the ice thickens along X
        return float(noise[:, :, 4:16].std() / noise[:, :, 32:44].std())

    flat = simulate_tomogram(SHAPE, snr=0.1, noise="poisson", seed=2)
    sim = simulate_tomogram(SHAPE, snr=0.1, noise="poisson", ice_gradient=2.0, seed=2)
    np.testing.assert_allclose(sim.noisy, 0.5 * (sim.even + sim.odd), atol=1e-6)
    even, odd = (sim.even - sim.target).ravel(), (sim.odd - sim.target).ravel()
    assert abs(np.corrcoef(even, odd)[0, 1]) < 0.05
    # normalised by each tilt's mean count, thin ice (more electrons) carries more absolute
    # noise and proportionally more signal (measured 1.033 with the gradient, 0.996 without)
    assert thin_over_thick(sim) > 1.02 > thin_over_thick(flat)


def test_a_narrow_detector_makes_the_noise_weaker_at_the_faces() -> None:
    wide = simulate_tomogram(SHAPE, snr=0.1, seed=4)
    narrow = simulate_tomogram(SHAPE, snr=0.1, detector="narrow", seed=4)

    def face_over_centre(sim: SimulatedTomogram) -> float:
        noise = (sim.noisy - sim.target)[:8]  # an outer Z slab, where high tilts leave
        return float(noise[:, :, :6].std() / noise[:, :, 21:27].std())

    assert face_over_centre(narrow) < 0.9 < face_over_centre(wide)


def test_crowding_fills_the_slab_and_damage_depends_on_the_tilt_order() -> None:
    sparse = simulate_tomogram((32, 48, 48), snr=1.0, seed=5)
    crowded = simulate_tomogram((32, 48, 48), snr=1.0, crowding=3.0, seed=5)
    assert (crowded.phantom > 0.3).mean() > 1.5 * (sparse.phantom > 0.3).mean()
    orders = [
        simulate_tomogram((32, 32, 32), snr=1.0, tilt_scheme=scheme, seed=5).target
        for scheme in ("none", "sequential", "dose-symmetric")
    ]
    assert not np.allclose(orders[0], orders[1]) and not np.allclose(orders[1], orders[2])
    # radiation damage only removes signal: less total power than without it
    assert orders[1].var() < orders[0].var() and orders[2].var() < orders[0].var()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": "laplace"}, "noise"),
        ({"detector": "huge"}, "detector"),
        ({"tilt_scheme": "random"}, "tilt_scheme"),
        ({"crowding": -1.0}, "crowding"),
        ({"ice_gradient": 3.0}, "ice_gradient"),
        ({"fiducials": 1.5}, "fiducials"),
        ({"fiducials": -1}, "fiducials"),
        ({"detector_mtf": 0.0}, "detector_mtf"),
        ({"detector_mtf": 1.5}, "detector_mtf"),
    ],
)
def test_invalid_imaging_choices_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_tomogram((16, 16, 16), **kwargs)


def test_gold_fiducials_sit_on_the_slab_surfaces_and_make_the_noise_depend_on_position():
    plain = simulate_tomogram((64, 64, 64), snr=0.1, noise="poisson", seed=3)
    beads = simulate_tomogram((64, 64, 64), snr=0.1, noise="poisson", fiducials=4, seed=3)
    gold = beads.phantom - plain.phantom  # the specimen is drawn exactly as without them
    assert gold.min() >= 0 and gold.max() == pytest.approx(8.0, rel=0.01)
    z = np.flatnonzero(gold.max(axis=(1, 2)) > 4)  # the slab's surfaces: z 15.5 and 47.5
    np.testing.assert_array_equal(z, [*range(11, 21), *range(43, 53)])  # beads of radius 5
    assert beads.target.max() > 3 * plain.target.max()  # far denser than any protein

    def local_std(noise: np.ndarray) -> np.ndarray:
        return np.sqrt(ndimage.uniform_filter(noise * noise, 8))

    ratio = local_std(beads.noisy - beads.target) / local_std(plain.noisy - plain.target)
    near = ndimage.binary_dilation(gold > 1, iterations=6)
    far = ~ndimage.binary_dilation(gold > 1, iterations=20)
    # measured 1.055 near the beads, 1.004 far from them
    assert ratio[near].mean() > 1.03 and abs(ratio[far].mean() - 1) < 0.01


def test_a_detector_mtf_correlates_the_noise_in_plane():
    def lag1_x_and_high_share(sim: SimulatedTomogram) -> tuple[float, float]:
        noise = sim.noisy - sim.target
        lag1 = float((noise[..., 1:] * noise[..., :-1]).mean() / (noise * noise).mean())
        high = noise - ndimage.gaussian_filter(noise, 1.0)
        return lag1, float((high * high).mean() / (noise * noise).mean())

    ideal = simulate_tomogram((64, 64, 64), snr=0.1, seed=3)
    same = simulate_tomogram((64, 64, 64), snr=0.1, detector_mtf=1.0, seed=3)
    np.testing.assert_array_equal(ideal.noisy, same.noisy)
    blurred = simulate_tomogram((64, 64, 64), snr=0.1, detector_mtf=0.3, seed=3)
    (lag_ideal, high_ideal), (lag_mtf, high_mtf) = map(lag1_x_and_high_share, (ideal, blurred))
    # measured: lag-1 along X -0.085 -> 0.205, high-pass share 0.85 -> 0.67
    assert lag_mtf > lag_ideal + 0.2 and high_mtf < high_ideal - 0.1


@pytest.mark.parametrize("noise", ["gaussian", "poisson"])
def test_a_noise_seed_redraws_only_the_noise(noise: str) -> None:
    kwargs = {"noise": noise, "crowding": 1.0, "seed": 4}
    base = simulate_tomogram((24, 32, 32), **kwargs)
    again = simulate_tomogram((24, 32, 32), **kwargs, noise_seed=1)
    other = simulate_tomogram((24, 32, 32), **kwargs, noise_seed=2)
    np.testing.assert_array_equal(again.target, base.target)
    np.testing.assert_array_equal(again.phantom, base.phantom)
    noises = [t.noisy - t.target for t in (base, again, other)]
    assert np.corrcoef(noises[0].ravel(), noises[1].ravel())[0, 1] < 0.05
    assert np.corrcoef(noises[1].ravel(), noises[2].ravel())[0, 1] < 0.05
    assert 0.9 < noises[1].var() / noises[0].var() < 1.1
    repeat = simulate_tomogram((24, 32, 32), **kwargs, noise_seed=1)
    np.testing.assert_array_equal(repeat.noisy, again.noisy)
