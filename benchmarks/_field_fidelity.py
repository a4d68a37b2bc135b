"""Whole-volume noise statistics that patch spectra cannot see (``noise_fidelity.py``).

A noise model is stationary; the pairs get its noise scaled by the local-amplitude map. What
the pairs add is compared here with the true noise (noisy − target) over the whole volume:
how its variance varies from place to place, its correlations along the directions in which
a tilt series smears dense objects (streaks through the missing wedge), and its higher
moments, everywhere and next to the densest objects. Fields are normalised and
wedge-axis-first, so axis 0 is the beam and axis 1 the tilt axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, stats

BLOCK = 16  # voxels per side of the boxes whose variances make the variance map
DENSE_FRACTION = 0.002  # the densest voxels of the low-passed target
NEAR = 10  # voxels: "next to a dense object"
LOW_SIGMA = 2.0  # voxels: a Gaussian low-pass keeping |k| below ~0.08 cycles/voxel
# (beam, across) offsets in the plane perpendicular to the tilt axis, lag ~4 voxels: 0° is
# along the beam, ±27/45/63° inside a ±60-70° tilt range, 90° across it (in the wedge)
STREAK_OFFSETS = {0: (4, 0), 27: (4, 2), 45: (3, 3), 63: (2, 4), 90: (0, 4)}


def dense_neighbourhood(target: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Voxels within ``NEAR`` of the densest ``DENSE_FRACTION`` of the (low-passed) target:
    gold beads where a case has them, else the darkest protein and membrane."""
    smooth = np.abs(ndimage.gaussian_filter(target, 1.0))
    dense = (smooth >= np.quantile(smooth[inside], 1 - DENSE_FRACTION)) & inside
    return (ndimage.distance_transform_edt(~dense) <= NEAR) & inside


def block_variances(field: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Variance in every ``BLOCK``³ box that lies wholly inside the data."""
    out = []
    z, y, x = (n // BLOCK for n in field.shape)
    for i in range(z):
        for j in range(y):
            for k in range(x):
                box = tuple(slice(a * BLOCK, (a + 1) * BLOCK) for a in (i, j, k))
                if inside[box].all():
                    out.append(field[box].var())
    return np.asarray(out)


def directional_correlations(field: np.ndarray, where: np.ndarray) -> dict[str, float]:
    """Correlation of ``field`` with itself at each of ``STREAK_OFFSETS``, over the voxel
    pairs whose both ends lie in ``where``; the sign of the across offset is averaged."""
    out = {}
    for angle, (dz, dx) in STREAK_OFFSETS.items():
        values = []
        for sign in (1, -1) if dx else (1,):
            shift = (dz, 0, sign * dx)
            a, b = _overlap(field, shift)
            ma, mb = _overlap(where, shift)
            both = ma & mb
            values.append(float(np.corrcoef(a[both], b[both])[0, 1]))
        out[str(angle)] = float(np.mean(values))  # str: the same key after a JSON round trip
    return out


def _overlap(array: np.ndarray, shift: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``array`` and ``array`` moved by ``shift``, cut to where both exist."""
    first, second = [], []
    for s, n in zip(shift, array.shape, strict=True):
        first.append(slice(max(0, -s), n - max(0, s)))
        second.append(slice(max(0, s), n + min(0, s)))
    return array[tuple(first)], array[tuple(second)]


def field_statistics(field: np.ndarray, inside: np.ndarray, near: np.ndarray) -> dict[str, Any]:
    """What ``compare_fields`` compares, for one field."""
    sample = field[inside]
    close = field[near]
    low = ndimage.gaussian_filter(field, LOW_SIGMA)
    return {
        "block_variances": block_variances(field, inside),
        "low_power": float(low[inside].var()),
        "near_variance_ratio": float(close.var() / sample.var()),
        "streaks": directional_correlations(field, inside),
        "streaks_near": directional_correlations(field, near),
        "skewness": float(stats.skew(sample)),
        "kurtosis": float(stats.kurtosis(sample)),
        "skewness_near": float(stats.skew(close)),
        "kurtosis_near": float(stats.kurtosis(close)),
    }


def compare_fields(model: dict[str, Any], truth: dict[str, Any]) -> dict[str, float]:
    """A model field's statistics against the true noise's (0 is perfect for *_error).

    ``variance_map_error``: RMS log2 ratio of the block variances (after matching their
    means, so it sees only where the noise is stronger or weaker); ``low_power_ratio``: the
    low-passed fields' power ratio over all the data (whether the map, set by high-pass
    energy, scales the low frequencies right inside the specimen too; per box it would be
    mostly sampling noise, too few independent low-passed values); ``streak_error``: largest
    difference of the directional correlations, everywhere and next to dense objects.
    """
    mine, real = np.log2(model["block_variances"]), np.log2(truth["block_variances"])
    mismatch = (mine - mine.mean()) - (real - real.mean())
    streaks = [model["streaks"][a] - truth["streaks"][a] for a in truth["streaks"]]
    near = [model["streaks_near"][a] - truth["streaks_near"][a] for a in truth["streaks"]]
    return {
        "variance_spread": float(mine.std()),
        "variance_map_error": float(np.sqrt(np.mean(mismatch**2))),
        "variance_map_correlation": float(np.corrcoef(mine, real)[0, 1]),
        "low_power_ratio": model["low_power"] / truth["low_power"],
        "near_variance_ratio": model["near_variance_ratio"] / truth["near_variance_ratio"],
        "streak_error": float(np.max(np.abs(streaks))),
        "streak_error_near": float(np.max(np.abs(near))),
        "skewness": model["skewness"],
        "kurtosis": model["kurtosis"],
        "kurtosis_near": model["kurtosis_near"],
    }


def truth_summary(truth: dict[str, Any]) -> dict[str, Any]:
    """The true noise's own figures, for the report (how non-stationary it is)."""
    logs = np.log2(truth["block_variances"])
    return {
        "variance_spread": float(logs.std()),
        "near_variance_ratio": truth["near_variance_ratio"],
        "streaks": truth["streaks"],
        "streaks_near": truth["streaks_near"],
        "skewness": truth["skewness"],
        "kurtosis": truth["kurtosis"],
        "skewness_near": truth["skewness_near"],
        "kurtosis_near": truth["kurtosis_near"],
    }
