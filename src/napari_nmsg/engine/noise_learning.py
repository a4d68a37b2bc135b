"""Learn the noise model from the background patches of one volume, or of several that
share one model (``nmsg batch --fit-on N``): patches of every volume are pooled first."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from ..errors import InputError
from .config import NMSGConfig
from .device import resolve_device
from .events import EventStream, Progress
from .model import NoiseLearning
from .noise_model import (
    AUTO_CAP_MIN_PATCHES,
    SeparableFit,
    SpectralFit,
    SpectralNoise,
    autocorrelation_power_spectrum,
    fit_spectrum,
    held_out_fidelity,
    iter_fit_gan,
    sample_patches,
    separable_noise_fit,
)
from .noise_patches import NoisePatches, extract_noise_patches, random_boxes
from .pair_noise import volume_spectrum
from .volume import NormalisedVolume


def centred_crop(patches: np.ndarray, size: int) -> np.ndarray:
    """The central ``size``³ of each patch ``(N, p, p, p)``, mean-free again."""
    lo = (patches.shape[1] - size) // 2
    part = patches[:, lo : lo + size, lo : lo + size, lo : lo + size]
    return part - part.mean(axis=(1, 2, 3), keepdims=True)


def pool_noise_patches(found: Sequence[NoisePatches]) -> NoisePatches:
    """One set of patches from several volumes, cut to the smallest patch size found."""
    if len(found) == 1:
        return found[0]
    size = min(p.patch_size for p in found)
    parts = [centred_crop(p.patches, size) for p in found]
    corners = np.concatenate([p.corners for p in found])
    notes = "; ".join(f"volume {i}: {p.note}" for i, p in enumerate(found))
    return NoisePatches(np.concatenate(parts).astype(np.float32), corners, size, notes)


AUTOMATIC = "spectral, automatic background"  # fidelity key of the comparison model
WHOLE_VOLUME_BOXES = 512  # twice the most patches (max_patches): a fit with less scatter


def whole_volume_boxes(sources: Sequence[NormalisedVolume], size: int, seed: int) -> np.ndarray:
    """``WHOLE_VOLUME_BOXES`` mean-free ``size``³ boxes drawn anywhere in ``sources``."""
    rng = np.random.default_rng(seed)  # its own stream: the patches' split stays as it was
    per_volume = max(1, WHOLE_VOLUME_BOXES // len(sources))
    return np.concatenate([random_boxes(s, size, per_volume, rng).patches for s in sources])


def whole_volume_fit(boxes: np.ndarray) -> SeparableFit | None:
    """The separable fit of boxes drawn anywhere (``whole_volume_boxes``), which
    ``fit_spectrum`` takes its band from where it caps; None where too few boxes fit. About
    0.4 s on 128³ (2-core AMD EPYC), so it is made only where the cap asks for it."""
    if len(boxes) < AUTO_CAP_MIN_PATCHES:
        return None
    return separable_noise_fit(autocorrelation_power_spectrum(boxes))


def _automatic_fidelity(
    sources: Sequence[NormalisedVolume],
    config: NMSGConfig,
    held_out: np.ndarray,
    generator: torch.Generator,
    whole: Callable[[int], SeparableFit | None],
) -> dict[str, float] | None:
    """How the spectral model of the automatic search's patches fares against the held-out
    patches of the marked background: the side-by-side figure for the user's choice.
    None when the search finds nothing. ``whole``: ``whole_volume_fit`` for a box size."""
    unmarked = [NormalisedVolume(s.raw, s.normalisation, s.fill) for s in sources]
    per_volume = max(1, config.max_patches // len(sources))
    try:
        found = pool_noise_patches(
            [extract_noise_patches(v, config.patch_size, per_volume) for v in unmarked]
        )
    except InputError:
        return None
    size = min(found.patch_size, held_out.shape[1])
    real = centred_crop(held_out, size)
    fitted, _ = fit_checked_spectrum(
        found.patches,
        real,
        config.separable_cap,
        config.seed,
        lambda: whole(found.patch_size),
    )
    model = SpectralNoise(torch.from_numpy(fitted.kernel)).to(generator.device)
    return held_out_fidelity(model, real, generator)


# The automatic cap takes what the patches hold beyond a noise separable along the tilt
# axis for signal. Where the noise itself is not separable it takes noise out: on the real
# HIV-VLP tomogram it took 12 % of the patches' power and the capped model matched held-out
# patches with a spectrum error of 0.137 against 0.071 uncapped (axial correlation 0.05
# against their 0.14; benchmarks/results/real-no-cap). On the four simulated suite cases
# it applies to, capping moved that error by 1 % or less, as signal barely shows in it. The
# band from boxes drawn anywhere is not judged with it: on a thin lamella (48 voxels, slab
# 75 %) it lowered the band to 0.81-0.88x the true noise, the patches' held 1.18-1.31x, and
# that difference alone refused the cap (benchmarks/results/cap-check).
CAP_FIT_TOLERANCE = 1.25


def fit_checked_spectrum(
    train: np.ndarray,
    held_out: np.ndarray,
    cap: bool | None,
    seed: int,
    whole: Callable[[], SeparableFit | None] | None = None,
) -> tuple[SpectralFit, str]:
    """``fit_spectrum``, and where ``cap`` is automatic (None) and capped, the uncapped fit
    instead if the cap alone matches the held-out patches ``CAP_FIT_TOLERANCE`` times worse
    (spectrum error); the note says so. Both are drawn with the same noise (``seed``). The
    band from boxes drawn anywhere is left out of that comparison: it is meant to differ
    from patches that hold signal."""
    fitted = fit_spectrum(train, cap, whole)
    if cap is not None or not fitted.tilt_axis or not len(held_out):
        return fitted, ""
    capped, plain = fit_spectrum(train, None), fit_spectrum(train, False)

    def error(fit: SpectralFit) -> float:
        model = SpectralNoise(torch.from_numpy(fit.kernel))
        drawn_with = torch.Generator().manual_seed(seed)
        return held_out_fidelity(model, held_out, drawn_with)["log_psd_error"]

    capped_error, plain_error = error(capped), error(plain)
    if capped_error <= CAP_FIT_TOLERANCE * plain_error:
        return fitted, ""
    return plain, (
        f"no separable cap: capped, the spectrum would have matched held-out patches with "
        f"error {capped_error:.3f} instead of {plain_error:.3f} (noise not separable along "
        "the tilt axis, not signal)"
    )


def _cap_note(spectral: SpectralFit, source: NormalisedVolume) -> str:
    """What the spectrum's cap took out, with the tilt axis in the volume's own axes."""
    wedge = source.normalisation.wedge_axis
    original = (wedge, *(a for a in range(3) if a != wedge))[spectral.tilt_axis]
    return (
        f"{spectral.signal_share:.0%} of their power judged signal and left out of the noise "
        f"spectrum (noise separable along the tilt axis, {'ZYX'[original]})"
    )


def iter_learn_noise_from(
    sources: Sequence[NormalisedVolume], config: NMSGConfig
) -> EventStream[NoiseLearning]:
    """Extract background noise patches from ``sources`` and fit the configured model.

    The spectral model is always fitted: it is the GAN's baseline in ``fidelity``. The
    normalisation recorded is the first volume's.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    per_volume = max(1, config.max_patches // len(sources))
    found = []
    for i, source in enumerate(sources):
        yield Progress("noise-patches", i, len(sources))
        found.append(extract_noise_patches(source, config.patch_size, per_volume))
    patches = pool_noise_patches(found)
    yield Progress(
        "noise-patches", len(sources), len(sources), {"patches": float(len(patches.patches))}
    )
    train, held_out = patches.split(0.25, rng)
    size = patches.patch_size
    # made once per box size: the marked background's fit and the automatic search's both
    # ask for it where they cap
    boxes = functools.cache(lambda box: whole_volume_boxes(sources, box, config.seed))
    whole = functools.cache(lambda box: whole_volume_fit(boxes(box)))
    spectral, refused = fit_checked_spectrum(
        train, held_out, config.separable_cap, config.seed, lambda: whole(size)
    )
    baseline = SpectralNoise(torch.from_numpy(spectral.kernel)).to(device)
    model: SpectralNoise = baseline
    if spectral.tilt_axis or refused:
        note = _cap_note(spectral, sources[0]) if spectral.tilt_axis else refused
        patches = replace(patches, note=f"{patches.note}; {note}")
    fidelity = {"spectral": held_out_fidelity(baseline, held_out, generator)}
    if any(source.has_background for source in sources):
        automatic = _automatic_fidelity(sources, config, held_out, generator, whole)
        if automatic is not None:
            fidelity[AUTOMATIC] = automatic
    if config.noise_model == "gan":
        model, fidelity["gan"] = yield from iter_fit_gan(
            train, held_out, config, device, generator, spectral.kernel
        )
    generated = sample_patches(model, len(held_out), size, generator)
    return NoiseLearning(
        noise_model=model.eval().cpu(),
        spectral_model=baseline.eval().cpu(),
        validation_model=SpectralNoise(torch.from_numpy(spectral.validation_kernel)).eval(),
        normalisation=sources[0].normalisation,
        patches=patches,
        fidelity=fidelity,
        real_examples=held_out,
        generated_examples=generated,
        volume_power=volume_spectrum(boxes(size)) if spectral.tilt_axis else None,
    )
