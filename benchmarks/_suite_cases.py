"""The case suite's cases (``suite.py``): a base and what each case changes in it, and the
methods a run can compare.

``role`` says whether a case was looked at while choosing the defaults (``tune``) or only run
after the choice (``held-out``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

BASE = {"shape": (128, 128, 128), "snr": 0.1}
# 4 Å, crowded, Poisson, visible CTF ringing, non-stationary: what the field now records
REALISTIC = {
    "voxel_size": 4.0, "defocus_um": 4.0, "noise": "poisson", "detector": "narrow",
    "crowding": 3.0, "ice_gradient": 0.3,
}  # fmt: skip
CASES: dict[str, dict[str, Any]] = {
    "vox10-sparse": {"role": "tune", "sim": {}, "note": "10 Å, Gaussian noise, sparse (old base)"},
    "vox4-crowded": {"role": "tune", "sim": REALISTIC, "note": "4 Å crowded, Poisson, narrow"},
    "vox7-crowded": {
        "role": "held-out",
        "sim": {**REALISTIC, "voxel_size": 7.0, "seed": 2},
        "note": "7 Å crowded, Poisson, narrow detector",
    },
    "vox14-bin4": {
        "role": "held-out",
        "sim": {"voxel_size": 14.0, "defocus_um": 6.0, "noise": "poisson", "crowding": 1.0},
        "note": "14 Å (bin 4), −6 µm, Poisson",
    },
    "snr0.03": {
        "role": "held-out",
        "sim": {**REALISTIC, "snr": 0.03, "voxel_size": 7.0},
        "note": "7 Å crowded, Poisson at SNR 0.03 per tilt",
    },
    "snr0.2-gauss": {
        "role": "held-out",
        "sim": {"snr": 0.2, "voxel_size": 10.0, "crowding": 2.0},
        "note": "10 Å crowded, Gaussian noise at SNR 0.2",
    },
    "tilt45": {
        "role": "held-out",
        "sim": {**REALISTIC, "tilt_range": 45.0, "seed": 3},
        "note": "4 Å crowded Poisson, ±45°",
    },
    "tilt70-dosesym": {
        "role": "held-out",
        "sim": {**REALISTIC, "tilt_range": 70.0, "tilt_scheme": "dose-symmetric", "seed": 4},
        "note": "4 Å crowded Poisson, ±70° dose-symmetric with radiation damage",
    },
    "thick-gradient": {
        "role": "held-out",
        "sim": {**REALISTIC, "voxel_size": 10.0, "slab_fraction": 0.8, "ice_gradient": 0.8},
        "note": "10 Å, slab 80 % of Z, ice 80 % thicker on one side, Poisson",
    },
    "fill-frame": {
        "role": "held-out",
        "sim": {**REALISTIC, "seed": 5},
        "frame": 16,
        "note": "4 Å crowded Poisson inside a 16-voxel zero frame (trimvol/rotatevol)",
    },
    "gold-fiducials": {
        "role": "held-out",
        "sim": {**REALISTIC, "voxel_size": 7.0, "fiducials": 12, "seed": 9},
        "note": "7 Å crowded Poisson with 12 gold beads (10 nm) on the slab surfaces",
    },
    "detector-mtf": {
        "role": "held-out",
        "sim": {**REALISTIC, "detector_mtf": 0.3, "seed": 10},
        "note": "4 Å crowded Poisson, detector MTF 0.3 at Nyquist (signal and noise blurred)",
    },
    "thickness-y": {
        "role": "held-out",
        "sim": {**REALISTIC, "seed": 6, "shape": (64, 128, 128)},
        "transpose": True,
        "note": "4 Å crowded Poisson, 64 thick, stored (Y=thickness) as IMOD does",
    },
    # specimen through the whole thickness (a volume trimmed to the specimen): no clean ice
    "full-slab-7A": {
        "role": "tune",
        "sim": {**REALISTIC, "voxel_size": 7.0, "slab_fraction": 1.0, "seed": 21},
        "note": "7 Å crowded Poisson, specimen through the whole thickness",
    },
    "no-vacuum-10A": {
        "role": "held-out",
        "sim": {
            **REALISTIC,
            "voxel_size": 10.0,
            "crowding": 2.0,
            "slab_fraction": 1.0,
            "seed": 42,
            "shape": (96, 128, 128),
        },
        "note": "10 Å crowded Poisson, 96 × 128 × 128, specimen through the whole thickness",
    },
    "no-vacuum-4A": {
        "role": "held-out",
        "sim": {**REALISTIC, "slab_fraction": 1.0, "seed": 41},
        "note": "4 Å crowded Poisson, specimen through the whole thickness",
    },
    "slab0.95-gauss": {
        "role": "held-out",
        "sim": {
            "voxel_size": 5.0,
            "detector": "narrow",
            "crowding": 3.0,
            "slab_fraction": 0.95,
            "seed": 43,
            "shape": (112, 112, 112),
        },
        "note": "5 Å crowded, Gaussian noise, 112³, slab 95 % of the thickness",
    },
    # made for a check of the defaults on data unlike the rest (2026-12-06), in no decision
    "vox20-bin8": {
        "role": "held-out",
        "sim": {
            **REALISTIC,
            "voxel_size": 20.0,
            "defocus_um": 8.0,
            "seed": 22,
            "shape": (96, 128, 128),
        },
        "note": "20 Å (bin 8), −8 µm, crowded Poisson, 96 × 128 × 128",
    },
    "vox3-lowdefocus": {
        "role": "held-out",
        "sim": {**REALISTIC, "voxel_size": 3.0, "defocus_um": 2.5, "seed": 23},
        "note": "3 Å, −2.5 µm, crowded Poisson",
    },
    "thin-lamella": {
        "role": "held-out",
        "sim": {
            **REALISTIC,
            "voxel_size": 10.0,
            "slab_fraction": 0.75,
            "seed": 24,
            "shape": (48, 160, 160),
        },
        "note": "10 Å crowded Poisson, 48 × 160 × 160, slab 75 % of the thickness",
    },
    "sparse-tilt50": {
        "role": "held-out",
        "sim": {
            "snr": 0.05,
            "voxel_size": 5.0,
            "noise": "poisson",
            "detector": "narrow",
            "crowding": 0.5,
            "tilt_range": 50.0,
            "tilt_step": 2.0,
            "seed": 25,
        },
        "note": "5 Å, few particles, Poisson at SNR 0.05, ±50° in 2° steps",
    },
}
# a preset with other settings: (preset, overrides); its noise model differs, so the
# estimate's ranking (which compares risks under one noise model) leaves it out.
# *-true-spectrum is that preset with its noise model fitted to the true noise instead of
# the background patches: a spectrum-exact coloured Gaussian (needs the truth)
PRESET_VARIANTS = {
    "fast-gan": ("fast", {"noise_model": "gan"}),
    "fast-no-cap": ("fast", {"separable_cap": False}),
    "fast-true-spectrum": ("fast", {}),
    "quality-true-spectrum": ("quality", {}),
}
METHODS = (
    "noisy", "gaussian", "tv", "topaz", "n2n", "supervised", "r2r-true", "fast", *PRESET_VARIANTS,
    "balanced", "quality",
)  # fmt: skip
# need the halves or the truth, which no user has: r2r-true is NMSG with a perfect noise model
REFERENCES = ("n2n", "supervised", "r2r-true")
DEFAULT_METHODS = "noisy,gaussian,tv,topaz,fast"


def simulate_case(name: str, seed: int, noise_seed: int | None = None) -> dict[str, np.ndarray]:
    """Noisy, halves, target and the noisy volume's noise (noisy − target) of a case, with
    its frame and axis order applied; ``noise_seed`` redraws only the noise."""
    from napari_nmsg.simulate import simulate_tomogram

    spec = CASES[name]
    params = {**BASE, **spec["sim"]}
    shape = params.pop("shape")
    sim = simulate_tomogram(shape, seed=params.pop("seed", seed), noise_seed=noise_seed, **params)
    data = {k: getattr(sim, k) for k in ("noisy", "even", "odd", "target")}
    data["noise"] = data["noisy"] - data["target"]
    if spec.get("frame"):
        inner = tuple(slice(spec["frame"], n - spec["frame"]) for n in shape)
        for key in ("noisy", "even", "odd", "noise"):
            framed = np.zeros_like(data[key])
            framed[inner] = data[key][inner]
            data[key] = framed
        data["scored"] = inner
    if spec.get("transpose"):
        data = {k: np.ascontiguousarray(np.swapaxes(v, 0, 1)) for k, v in data.items()}
    data["voxel_size"] = sim.voxel_size
    return data


def noise_realisations(name: str, seed: int, data: dict[str, Any], count: int) -> list[np.ndarray]:
    """``count`` independent realisations of the noisy volume's noise, as a perfect noise
    model would draw them: half the even/odd difference (same covariance, uncorrelated with
    the noisy volume's own noise), then the noise of the same specimen simulated again."""
    first = (data["even"] - data["odd"]) / 2
    return [first] + [simulate_case(name, seed, k)["noise"] for k in range(1, count)]


def scored(data: dict[str, Any], volume: np.ndarray) -> np.ndarray:
    """The part of a volume that is scored: the data inside any fill frame."""
    return volume[data["scored"]] if "scored" in data else volume


def case_names(text: str, fail: Callable[[str], NoReturn]) -> list[str]:
    """The comma-separated case names in ``text``; ``fail`` (e.g. an argument parser's
    ``error``) is called with those that are not suite cases."""
    names = text.split(",")
    unknown = [name for name in names if name not in CASES]
    if unknown:
        fail(f"unknown case: {', '.join(unknown)}")
    return names
