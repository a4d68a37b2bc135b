"""Fast synthetic cryo-electron tomograms with ground truth.

A denoiser for cryo-ET can only be scored against a clean reference, which real data never has.
This module builds one the way a microscope would: a band-limited density phantom (vesicles,
filaments, ribosome-like particles and small proteins inside a slab of vitreous ice, with empty
ice above and below) is projected over a single-axis tilt series, each projection is modulated
by the phase-contrast transfer function (300 kV, Cs 2.7 mm, 7 % amplitude contrast, a given
underfocus) and receives noise at the requested SNR, and the series is reconstructed by weighted
back-projection (WBP).

The defaults (Gaussian noise, a detector wider than the volume, sparse particles) give
stationary noise. Real data are not like that, so each departure can be switched on alone:
Poisson shot noise through ice whose thickness grows with tilt and across the field
(``noise="poisson"``, ``ice_gradient``), a detector no wider than the volume (high-tilt rays
leave it near the faces: ``detector="narrow"``), crowded membranes, tubes and particles
(``crowding``), radiation damage in the order of acquisition (``tilt_scheme``), gold
fiducials whose missing-wedge streaks and shot noise depend on position (``fiducials``), and
a detector that blurs signal and noise alike (``detector_mtf``).

Reconstruction is linear, so the clean projections and the two independent half-dose noise
series are reconstructed separately and summed. This gives, from one identical operator:

* ``target``: WBP of the noiseless projections, i.e. the best a denoiser could hope to reach
  (same missing wedge, same CTF),
* ``even`` / ``odd``: WBP of two half-dose series with independent noise (Noise2Noise pairs),
* ``noisy``: WBP of the full-dose series, exactly ``(even + odd) / 2``.

Axes are ``(Z, Y, X)``; Z is the beam (thickness) axis and Y the tilt axis.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import fft as sfft
from scipy import ndimage

WAVELENGTH_A = 0.0197  # electron wavelength at 300 kV
CS_A = 2.7e7  # spherical aberration, 2.7 mm
AMPLITUDE_CONTRAST = 0.07
B_FACTOR_A2 = 100.0  # mild envelope on the CTF
SMOOTH_SIGMA = 0.7  # Gaussian blur of the phantom (voxels), keeps it band-limited
MIN_SIZE = 16
INELASTIC_MFP_A = 3500.0  # inelastic mean free path at 300 kV: ice attenuates the beam
CONTRAST_STD = 0.05  # phase contrast of the projections as a fraction of the beam (Poisson)
DAMAGE_B_PER_TILT = 4.0  # Å² of B-factor added by each earlier exposure (radiation damage)
NOISE_KINDS = ("gaussian", "poisson")
DETECTORS = ("wide", "narrow")
TILT_SCHEMES = ("none", "sequential", "dose-symmetric")
GOLD_RADIUS_A = 50.0  # 10 nm fiducial beads
GOLD_DENSITY = 8.0  # against ~1 for protein: gold scatters far more


@dataclass
class SimulatedTomogram:
    """A simulated tomogram, its half-dose splits and its ground truth (all ``(Z, Y, X)``)."""

    noisy: np.ndarray  # WBP of the full-dose noisy tilt series
    even: np.ndarray  # WBP of half-dose series A
    odd: np.ndarray  # WBP of half-dose series B (noise independent of A)
    target: np.ndarray  # WBP of the noiseless series: the ground truth for denoisers
    phantom: np.ndarray  # density before imaging (>= 0, zero outside the slab)
    voxel_size: float  # Å, isotropic
    snr: float  # signal-to-noise variance ratio of the full-dose projections
    tilt_angles: np.ndarray  # degrees


def simulate_tomogram(
    shape: tuple[int, int, int] = (64, 64, 64),
    *,
    snr: float = 0.1,
    tilt_range: float = 60.0,
    tilt_step: float = 3.0,
    defocus_um: float = 3.0,
    voxel_size: float = 10.0,
    slab_fraction: float = 0.5,
    noise: str = "gaussian",
    detector: str = "wide",
    crowding: float = 0.0,
    ice_gradient: float = 0.0,
    tilt_scheme: str = "none",
    fiducials: int = 0,
    detector_mtf: float = 1.0,
    seed: int = 0,
    noise_seed: int | None = None,
) -> SimulatedTomogram:
    """Simulate a cryo-electron tomogram of ``shape`` voxels with its noiseless ground truth.

    ``snr`` is the variance ratio of the clean (CTF-modulated) projection signal to the noise
    of the full-dose tilt series. Tilts run from ``-tilt_range`` to ``+tilt_range`` degrees in
    steps of ``tilt_step`` (symmetric about 0). ``slab_fraction`` of Z holds the specimen; the
    rest is empty ice. The same ``seed`` gives bit-identical outputs.

    ``noise="poisson"`` counts electrons: the dose per tilt is the one that gives ``snr`` at
    0° through the thinnest ice, and fewer electrons pass thicker ice (thickness grows as
    1/cos(tilt) and by ``ice_gradient`` (fraction) across X). ``detector="narrow"`` makes the
    detector as wide as the volume. ``crowding`` > 0 adds membranes, tubes and that many
    times more particles. ``tilt_scheme`` adds radiation damage (a B-factor growing with each
    earlier exposure) in sequential (-max to +max) or dose-symmetric (0, +, -, ...) order.
    ``fiducials`` 10 nm gold beads sit on the slab's two surfaces (``snr`` still refers to
    the specimen without them). ``detector_mtf`` is the detector's MTF at Nyquist (1: none);
    it falls as a Gaussian in frequency and blurs the projections' signal and noise alike,
    as an integrating detector does. ``noise_seed`` draws the noise from its own stream: the
    same specimen and tilts with another realisation of their noise (a perfect noise model
    to sample from, for benchmarks).
    """
    shape = _check_shape(shape)
    _check_range("snr", snr, 0.0)
    _check_range("tilt_range", tilt_range, 0.0, 90.0)
    _check_range("tilt_step", tilt_step, 0.0)
    _check_range("defocus_um", defocus_um, 0.0, low_inclusive=True)
    _check_range("voxel_size", voxel_size, 0.0)
    _check_range("slab_fraction", slab_fraction, 0.0, 1.0)
    _check_range("crowding", crowding, 0.0, 20.0, low_inclusive=True)
    _check_range("ice_gradient", ice_gradient, 0.0, 2.0, low_inclusive=True)
    _check_choice("noise", noise, NOISE_KINDS)
    _check_choice("detector", detector, DETECTORS)
    _check_choice("tilt_scheme", tilt_scheme, TILT_SCHEMES)
    if not isinstance(fiducials, numbers.Integral) or not 0 <= fiducials <= 1000:
        raise ValueError(f"fiducials must be a whole number in [0, 1000], got {fiducials!r}")
    _check_range("detector_mtf", detector_mtf, 0.0, 1.0)

    rng = np.random.default_rng(seed)
    phantom = _phantom(shape, voxel_size, slab_fraction, rng, crowding)
    # their own random stream: the specimen and its noise stay as without them
    gold = _gold(shape, voxel_size, slab_fraction, fiducials, np.random.default_rng([seed, 1]))

    n_half = math.floor(tilt_range / tilt_step + 1e-9)
    angles = tilt_step * np.arange(-n_half, n_half + 1, dtype=np.float64)  # degrees
    # A detector wider than the volume by its thickness lets every voxel see every tilt, as
    # in the middle of a slab far wider than thick: the noise is then stationary. A narrow
    # one loses high-tilt rays near the faces, as at the edges of a real reconstruction.
    pad = math.ceil((shape[0] - 1) / 2) if detector == "wide" else 0
    width = shape[2] + 2 * pad
    b_factors = B_FACTOR_A2 + DAMAGE_B_PER_TILT * _exposure_order(angles, tilt_scheme)
    projections = _project(phantom, np.deg2rad(angles), width)
    clean = _apply_ctf(projections, voxel_size, defocus_um, b_factors)

    signal_var = float(clean[..., pad : pad + shape[2]].var())
    if gold is not None:
        gold_projections = _project(gold, np.deg2rad(angles), width)
        clean = clean + _apply_ctf(gold_projections, voxel_size, defocus_um, b_factors)
        phantom = phantom + gold
    noise_rng = rng if noise_seed is None else np.random.default_rng([seed, 2, noise_seed])
    if noise == "gaussian":
        sigma = math.sqrt(signal_var / snr)
        # Half-dose noise has twice the variance; the full dose averages the two halves.
        half_noise = noise_rng.standard_normal((2, *clean.shape)) * (math.sqrt(2.0) * sigma)
    else:
        transmission = _ice_transmission(shape, voxel_size, angles, width, ice_gradient)
        contrast = clean / math.sqrt(signal_var)
        clean, half_noise = _shot_noise(contrast, transmission, snr, noise_rng)

    series = np.stack([clean, half_noise[0], half_noise[1]])
    if detector_mtf < 1.0:
        series = _blur_by_mtf(series, detector_mtf)
    filtered = _ramp_filter(series, np.deg2rad(tilt_step))
    target, rec_a, rec_b = _backproject(filtered, np.deg2rad(angles), shape[0], shape[2])
    return SimulatedTomogram(
        noisy=_f32(target + 0.5 * (rec_a + rec_b)),
        even=_f32(target + rec_a),
        odd=_f32(target + rec_b),
        target=_f32(target),
        phantom=_f32(phantom),
        voxel_size=float(voxel_size),
        snr=float(snr),
        tilt_angles=angles,
    )


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate ``shape`` as three integers of at least ``MIN_SIZE``."""
    try:
        dims = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise ValueError(f"shape must be three integers (Z, Y, X), got {shape!r}") from None
    if len(dims) != 3 or min(dims) < MIN_SIZE:
        raise ValueError(f"shape must be three integers >= {MIN_SIZE} (Z, Y, X), got {shape!r}")
    nz, ny, nx = dims
    return nz, ny, nx


def _check_range(
    name: str, value: float, low: float, high: float = math.inf, *, low_inclusive: bool = False
) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number in the given interval."""
    ok = isinstance(value, numbers.Real) and math.isfinite(value) and value <= high
    ok = ok and (value >= low if low_inclusive else value > low)
    if not ok:
        interval = (
            f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high < math.inf else ')'}"
        )
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _f32(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous float32 array."""
    return np.ascontiguousarray(a, dtype=np.float32)


# --- phantom -------------------------------------------------------------------------------


def _box(
    vol: np.ndarray, center: np.ndarray, extent: np.ndarray
) -> tuple[tuple[slice, ...], list[np.ndarray]] | None:
    """The part of ``vol`` within ``extent`` of ``center``: its slices and open coordinate grids
    relative to ``center`` (``None`` when it lies outside)."""
    slices = []
    for c, e, n in zip(center, extent, vol.shape, strict=True):
        lo, hi = max(math.floor(c - e), 0), min(math.ceil(c + e) + 1, n)
        if lo >= hi:
            return None
        slices.append(slice(lo, hi))
    grids = [g - c for g, c in zip(np.ogrid[tuple(slices)], center, strict=True)]
    return tuple(slices), grids


def _paint(vol: np.ndarray, slices: tuple[slice, ...], values: np.ndarray) -> None:
    """Union of densities: the larger value wins where objects overlap."""
    np.maximum(vol[slices], values, out=vol[slices], casting="unsafe")


def _sphere(vol: np.ndarray, center: np.ndarray, radius: float, density: float) -> None:
    """Solid sphere with an anti-aliased (one voxel) edge."""
    box = _box(vol, center, np.full(3, radius + 1.0))
    if box is not None:
        z, y, x = box[1]
        r = np.sqrt(z * z + y * y + x * x)
        _paint(vol, box[0], density * np.clip(radius + 0.5 - r, 0.0, 1.0))


def _shell(vol: np.ndarray, center: np.ndarray, radius: float, thick: float, dens: float) -> None:
    """Hollow spherical shell (membrane vesicle) of wall thickness ``thick``."""
    box = _box(vol, center, np.full(3, radius + thick / 2 + 1.0))
    if box is not None:
        z, y, x = box[1]
        r = np.sqrt(z * z + y * y + x * x)
        _paint(vol, box[0], dens * np.clip(thick / 2 + 0.5 - np.abs(r - radius), 0.0, 1.0))


def _axis_distance(
    vol: np.ndarray, center: np.ndarray, direction: np.ndarray, half_length: float, reach: float
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Slices of ``vol`` within ``reach`` of a segment through ``center`` along the unit
    vector ``direction`` (±``half_length``), and each voxel's distance to that segment."""
    box = _box(vol, center, np.abs(direction) * half_length + reach + 1.0)
    if box is None:
        return None
    z, y, x = box[1]
    dz, dy, dx = direction
    t = np.clip(z * dz + y * dy + x * dx, -half_length, half_length)
    return box[0], np.sqrt((z - t * dz) ** 2 + (y - t * dy) ** 2 + (x - t * dx) ** 2)


def _tube(
    vol: np.ndarray,
    center: np.ndarray,
    direction: np.ndarray,
    half_length: float,
    radius: float,
    wall: float,
    density: float,
) -> None:
    """Hollow cylinder (microtubule-like) of outer ``radius`` and wall thickness ``wall``;
    a wall of twice the radius makes a solid rod (filament)."""
    found = _axis_distance(vol, center, direction, half_length, radius)
    if found is not None:
        shell = wall / 2 + 0.5 - np.abs(found[1] - (radius - wall / 2))
        _paint(vol, found[0], density * np.clip(shell, 0.0, 1.0))


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    """A random direction, uniform on the sphere."""
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _phantom(
    shape: tuple[int, int, int],
    voxel_size: float,
    slab_fraction: float,
    rng: np.random.Generator,
    crowding: float = 0.0,
) -> np.ndarray:
    """Density phantom: objects inside a Z-centred slab, empty ice elsewhere, Gaussian-smoothed.

    Object counts scale with the slab volume; molecular sizes are physical (given in voxels at
    10 Å and rescaled by ``voxel_size``), vesicle radii are a fraction of the lateral size.
    ``crowding`` multiplies the particle counts by ``1 + crowding`` and adds membranes and
    tubes, drawn after everything else so that the sparse phantom stays as it was.
    """
    nz, ny, nx = shape
    vol = np.zeros(shape, np.float32)
    zc, half = (nz - 1) / 2, slab_fraction * nz / 2
    lateral = min(ny, nx)
    scale = 10.0 / voxel_size
    slab_voxels = ny * nx * 2 * half

    def centre(margin: float) -> np.ndarray:
        dz = max(half - margin, 0.0)
        return np.array(
            [rng.uniform(zc - dz, zc + dz), rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)]
        )

    def direction(max_elevation: float) -> np.ndarray:
        """A mostly in-plane unit vector (elevation from the XY plane up to the bound)."""
        azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(-max_elevation, max_elevation)
        return np.array(
            [
                math.sin(elevation),
                math.cos(elevation) * math.sin(azimuth),
                math.cos(elevation) * math.cos(azimuth),
            ]
        )

    for _ in range(int(rng.integers(2, 4))):  # vesicles (may be clipped by the slab)
        thick = max(rng.uniform(2.0, 3.0) * scale, 1.5)
        radius = max(rng.uniform(0.06, 0.2) * lateral, thick + 1.0)
        _shell(vol, centre(0.0), radius, thick, rng.uniform(0.7, 0.9))

    for _ in range(max(1, rng.poisson(3.0 * math.sqrt(ny * nx) / 64))):  # filaments
        radius = max(rng.uniform(1.5, 2.5) * scale, 1.0)
        axis = direction(0.15)
        half_length = rng.uniform(0.3, 0.7) * max(ny, nx)
        _tube(vol, centre(radius), axis, half_length, radius, 2 * radius, rng.uniform(0.8, 1.0))

    ribo_volume = 2.5 * 4 / 3 * np.pi * (5.0 * scale) ** 3
    for _ in range(max(1, rng.poisson(0.04 * slab_voxels / ribo_volume))):  # ribosomes
        r0 = max(rng.uniform(4.0, 6.0) * scale, 2.0)
        c0, density = centre(r0), rng.uniform(1.0, 1.3)
        _sphere(vol, c0, r0, density)
        for _ in range(int(rng.integers(1, 4))):
            offset = _unit_vector(rng) * r0 * rng.uniform(0.5, 0.9)
            _sphere(vol, c0 + offset, r0 * rng.uniform(0.6, 0.9), density)

    small_volume = 4 / 3 * np.pi * (2.0 * scale) ** 3
    for _ in range(rng.poisson(0.02 * slab_voxels / small_volume)):  # small proteins
        radius = max(rng.uniform(1.5, 2.5) * scale, 1.0)
        _sphere(vol, centre(radius), radius, rng.uniform(0.6, 1.0))

    if crowding > 0:
        extra = crowding * 0.06 * slab_voxels
        for _ in range(rng.poisson(extra / ribo_volume)):  # more ribosome-sized complexes
            r0 = max(rng.uniform(3.0, 6.0) * scale, 2.0)
            _sphere(vol, centre(r0), r0, rng.uniform(0.9, 1.3))
        for _ in range(rng.poisson(extra / small_volume)):  # crowded small proteins
            radius = max(rng.uniform(1.0, 2.5) * scale, 1.0)
            _sphere(vol, centre(radius), radius, rng.uniform(0.5, 1.0))
        for _ in range(1 + rng.poisson(crowding)):  # nearly flat membranes (large shells)
            thick = max(rng.uniform(3.0, 4.5) * scale, 1.5)
            radius = rng.uniform(1.0, 3.0) * lateral
            side = np.array([0.0, ny - 1, nx - 1]) * rng.uniform(0.0, 1.0, 3)
            away = _unit_vector(rng) * radius
            away[0] *= 0.2
            _shell(vol, side + np.array([zc, 0, 0]) + away, radius, thick, rng.uniform(0.6, 0.9))
        for _ in range(rng.poisson(crowding)):  # tubes (microtubule-like hollow cylinders)
            outer = max(12.0 * scale, 2.5)
            axis_dir, length = direction(0.15), rng.uniform(0.5, 1.0) * max(ny, nx)
            at, density = centre(outer), rng.uniform(0.8, 1.0)
            _tube(vol, at, axis_dir, length, outer, max(4.0 * scale, 1.0), density)
        for _ in range(rng.poisson(2 * crowding)):  # actin-like filaments
            radius = max(rng.uniform(2.5, 3.5) * scale, 1.0)
            length = rng.uniform(0.3, 0.7) * max(ny, nx)
            _tube(
                vol, centre(radius), direction(0.3), length, radius, 2 * radius, rng.uniform(0.7, 1)
            )

    z = np.arange(nz)
    vol[np.abs(z - zc) > half] = 0.0  # keep the ice outside the slab empty
    # A 3-sigma kernel (2 voxels) leaves the density exactly zero 2 voxels outside the slab.
    return ndimage.gaussian_filter(vol, SMOOTH_SIGMA, truncate=3.0)


# --- imaging -------------------------------------------------------------------------------


def _project(vol: np.ndarray, angles: np.ndarray, detector: int) -> np.ndarray:
    """Line integrals along Z tilted by ``angles`` (rad) in the Z–X plane, shape
    (A, Y, detector).

    Detector coordinate ``u = x cosθ + z sinθ`` (relative to the volume centre); rays are
    sampled with unit step by bilinear interpolation in each Z–X plane, zero outside.
    """
    nz, ny, nx = vol.shape
    cz, cx = (nz - 1) / 2, (nx - 1) / 2
    # Only the Z range holding density needs to be traced.
    filled = np.flatnonzero(np.abs(vol).max(axis=(1, 2)) > 0)
    z0 = max(int(filled[0]) - 1, 0) if filled.size else 0
    z1 = min(int(filled[-1]) + 2, nz) if filled.size else nz
    z1 = max(z1, z0 + 2)
    reach = max(cz - z0, z1 - 1 - cz)
    planes = torch.from_numpy(np.ascontiguousarray(vol[z0:z1].transpose(1, 0, 2)))[None]
    u = torch.arange(detector, dtype=torch.float64) - (detector - 1) / 2
    out = np.empty((len(angles), ny, detector), np.float32)
    # Every point of the filled slab lies within this distance of the centre.
    n = math.ceil(math.hypot(reach, cx))
    for i, theta in enumerate(angles):
        c, s = math.cos(theta), math.sin(theta)
        t = torch.arange(-n, n + 1, dtype=torch.float64)[:, None]
        z = u * s + t * c
        x = u * c - t * s
        gz = (z + cz - z0) * (2 / (z1 - z0 - 1)) - 1
        grid = torch.stack([x / cx, gz], dim=-1).to(torch.float32)[None]
        rays = F.grid_sample(planes, grid, mode="bilinear", align_corners=True)
        out[i] = rays[0].sum(dim=1).numpy()
    return out


def _exposure_order(angles: np.ndarray, scheme: str) -> np.ndarray:
    """How many exposures came before each tilt (zeros when damage is not simulated)."""
    if scheme == "none":
        return np.zeros(len(angles))
    if scheme == "sequential":
        key = angles
    else:  # dose-symmetric: 0°, then alternating +/- with growing |angle|
        key = np.abs(angles) * 2 + (angles < 0)
    return np.argsort(np.argsort(key, kind="stable"), kind="stable").astype(np.float64)


def _ice_transmission(
    shape: tuple[int, int, int],
    voxel_size: float,
    angles: np.ndarray,
    width: int,
    gradient: float,
) -> np.ndarray:
    """Fraction of the beam that passes the ice, ``(A, 1, width)``: the volume's thickness is
    ice, crossed at 1/cos(tilt), thicker by ``gradient`` from one side of X to the other."""
    u = np.linspace(-0.5, 0.5, width)
    thickness = shape[0] * voxel_size * (1.0 + gradient * u)
    path = thickness[None] / np.cos(np.deg2rad(angles))[:, None]
    return np.exp(-path / INELASTIC_MFP_A)[:, None, :]


def _shot_noise(
    contrast: np.ndarray, transmission: np.ndarray, snr: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Count electrons: (expected normalised images, the two half-dose noise series).

    ``contrast`` has unit variance. Each tilt is normalised by its mean count, as tilt series
    are before reconstruction, so thicker ice gives fewer electrons: less signal and a lower
    signal-to-noise ratio there.
    """
    expected = transmission * (1.0 + CONTRAST_STD * contrast)
    dose = snr / (CONTRAST_STD**2 * float(transmission[len(transmission) // 2].max()))
    counts = rng.poisson(dose * np.clip(expected, 0.0, None))
    half = rng.binomial(counts, 0.5)
    per_tilt = transmission.mean(axis=(1, 2), keepdims=True)
    image = expected / per_tilt - 1.0
    halves = np.stack([half, counts - half]) / (0.5 * dose * per_tilt) - 1.0
    return image.astype(np.float32), (halves - image).astype(np.float32)


def _apply_ctf(
    proj: np.ndarray, voxel_size: float, defocus_um: float, b_factors: np.ndarray
) -> np.ndarray:
    """Modulate each projection by the (sign-flipped, enveloped) phase-contrast CTF.

    ``sqrt(1 - A²) sin χ + A cos χ`` with ``χ = π λ Δz k² - π/2 Cs λ³ k⁴``: with underfocus
    ``Δz > 0`` low frequencies have positive sign, so density keeps positive contrast.
    """
    ny, nx = proj.shape[-2:]
    # Zero-padding keeps the CTF's delocalised fringes from wrapping around the edges.
    padded = (sfft.next_fast_len(2 * ny), sfft.next_fast_len(2 * nx, real=True))
    k2 = sfft.fftfreq(padded[0], voxel_size)[:, None] ** 2
    k2 = k2 + sfft.rfftfreq(padded[1], voxel_size)[None] ** 2
    chi = (
        np.pi * WAVELENGTH_A * defocus_um * 1e4 * k2 - 0.5 * np.pi * CS_A * WAVELENGTH_A**3 * k2**2
    )
    ctf = math.sqrt(1 - AMPLITUDE_CONTRAST**2) * np.sin(chi) + AMPLITUDE_CONTRAST * np.cos(chi)
    ctf = ctf * np.exp(-b_factors[:, None, None] * k2 / 4)  # one envelope per tilt
    spectrum = sfft.rfft2(proj, s=padded) * ctf
    return sfft.irfft2(spectrum, s=padded)[..., :ny, :nx]


def _gold(
    shape: tuple[int, int, int],
    voxel_size: float,
    slab_fraction: float,
    count: int,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """``count`` gold beads centred on the slab's top and bottom surfaces (None for 0)."""
    if count == 0:
        return None
    nz, ny, nx = shape
    vol = np.zeros(shape, np.float32)
    zc, half = (nz - 1) / 2, slab_fraction * nz / 2
    radius = max(GOLD_RADIUS_A / voxel_size, 1.5)
    for k in range(count):
        z = zc + (half if k % 2 else -half)
        _sphere(vol, np.array([z, rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)]), radius, 1.0)
    return GOLD_DENSITY * ndimage.gaussian_filter(vol, SMOOTH_SIGMA, truncate=3.0)


def _blur_by_mtf(series: np.ndarray, at_nyquist: float) -> np.ndarray:
    """Each projection of each series filtered by ``MTF(k) = at_nyquist ** (k / 0.5)²``."""
    ny, nx = series.shape[-2:]
    k2 = sfft.fftfreq(ny)[:, None] ** 2 + sfft.rfftfreq(nx)[None] ** 2
    mtf = at_nyquist ** (k2 / 0.25)
    blurred = sfft.irfft2(sfft.rfft2(series) * mtf, s=(ny, nx))
    return blurred.astype(np.float32)


def _ramp_filter(series: np.ndarray, weight: float) -> np.ndarray:
    """Ramp-filter every row along X (Ram-Lak kernel with a Shepp-Logan sinc apodisation),
    zero-padded against wrap-around, times the angular ``weight`` (tilt step in rad)."""
    nx = series.shape[-1]
    n_pad = sfft.next_fast_len(2 * nx)
    offsets = np.abs(sfft.fftfreq(n_pad, 1 / n_pad))
    kernel = np.zeros(n_pad)
    odd = offsets % 2 == 1
    kernel[0] = 0.25
    kernel[odd] = -1.0 / (np.pi * offsets[odd]) ** 2
    k = sfft.rfftfreq(n_pad)
    response = sfft.rfft(kernel).real * np.sinc(k) * weight
    filtered = sfft.irfft(sfft.rfft(series, n=n_pad, axis=-1) * response, n=n_pad, axis=-1)
    return np.ascontiguousarray(filtered[..., :nx], dtype=np.float32)


def _backproject(series: np.ndarray, angles: np.ndarray, nz: int, nx: int) -> np.ndarray:
    """Back-project filtered series of shape (S, A, Y, X), ``angles`` in rad, into S volumes of
    shape (nz, Y, X): ``vol(z, y, x) = Σ_θ p_θ(y, x cosθ + z sinθ)``, linear interpolation,
    zero outside the detector."""
    n_series, _, ny, detector = series.shape
    cz, cx, cu = (nz - 1) / 2, (nx - 1) / 2, (detector - 1) / 2
    z = torch.arange(nz, dtype=torch.float64)[:, None] - cz
    x = torch.arange(nx, dtype=torch.float64)[None] - cx
    rows = torch.from_numpy(series)
    acc = torch.zeros((1, n_series * ny, nz, nx), dtype=torch.float32)
    for i, theta in enumerate(angles):
        u = (x * math.cos(theta) + z * math.sin(theta)) / cu
        grid = torch.stack([u, torch.zeros_like(u)], dim=-1).to(torch.float32)[None]
        lines = rows[:, i].reshape(1, n_series * ny, 1, detector)
        acc += F.grid_sample(lines, grid, mode="bilinear", align_corners=True)
    return acc.reshape(n_series, ny, nz, nx).permute(0, 2, 1, 3).numpy()
