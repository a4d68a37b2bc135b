"""Generative noise models: a spectral (coloured Gaussian) baseline and a 3D WGAN-GP.

Both turn a white Gaussian field into noise shaped like the tomogram's. The spectral model
filters white noise with the square root of the noise patches' power spectrum, estimated from
their unbiased autocorrelation (second-order statistics, Gaussian), optionally less the
signal the patches hold where it is not separable along the tilt axis. The GAN starts from that
filter and adds a learned non-linear branch trained adversarially (WGAN-GP, as in the NMSG
paper but in 3D), so it can also learn non-Gaussian structure; it is kept only if held-out
fidelity says it is better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import ndimage, stats
from scipy.fft import next_fast_len
from torch import nn

from .config import NMSGConfig
from .events import EventStream, Progress

_BODY_MARGIN = 2  # two unpadded 3³ convolutions in the generator's non-linear branch
# cycles/voxel: from here up, background patches' power matched the true noise's within
# 4 % on every suite case (signal let in lifted only lower bands)
SEPARABLE_FROM = 0.25
_SEPARABLE_ITERATIONS = 30
# The automatic cap applies where the patches hold over AUTO_CAP_EXCESS more power than the
# separable fit predicts in either band of AUTO_CAP_BANDS (cycles/voxel), i.e. signal. On
# the 13 suite cases (fast preset's patches, 16³) the lower band's excess was -0.21 to -0.61
# on the nine with a clean background and +0.19 to +0.51 on the four whose patches hold
# 1.1-4.3x the true noise's power below 0.04 (thick specimen, 64-thick Y-stored volume, zero
# frame, gold beads); exactly separable noise gives 0 with a scatter of about 0.1 over 128
# patches. The upper band sees signal that the lower one misses where the flattest boxes'
# noise is weakest: on two volumes with specimen through their whole thickness (7 and 10 Å,
# crowded) the lower band held -0.06 / +0.02 and the upper +0.24 / +0.35; the upper band
# held -0.045 to -0.33 on the 16 cases with a clean background (suite and fresh). Fewer than
# AUTO_CAP_MIN_PATCHES patches fit the product too poorly: on small simulated volumes (16-27
# patches) whose patches held 1.3-5.8x the true low-band power the cap left 0.45-0.71x.
AUTO_CAP_BANDS = ((0.0, 1 / 16), (1 / 16, 1 / 6))
AUTO_CAP_EXCESS = 0.1
AUTO_CAP_MIN_PATCHES = 64
# Where the cap applies the patches hold signal, and capped at their own separable fit they
# still held 0.98-1.39x the true noise's power at 0.04-0.12 cycles/voxel on four volumes
# with no clean ice (thickness-y, no-vacuum-4A, full-slab-7A, slab0.95-gauss). The same
# product fitted on boxes drawn anywhere in the volume (its fitted bins hold noise, not
# signal, and no flattest-box selection) gave 0.86-1.21x there, and 1.01-1.14x on four clean
# cases. Below WHOLE_VOLUME_FROM it overshoots the true noise 3-6x (the ramp filter takes the
# noise to 0 at |k| = 0, which a product of the two fitted factors does not follow), so the
# patches' bins stay there.
WHOLE_VOLUME_FROM = 0.04
# Bins whose 3³ neighbourhood holds this much more power than the fit are signal. 0 cut
# signal-free patches' power at 0.04-0.25 cycles/voxel by 9 % (scatter of the estimate).
SIGNAL_EXCESS = 0.1


def frequency_radius(size: int) -> np.ndarray:
    """``|k|`` in cycles/voxel of each bin of a ``size``³ FFT grid (numpy's bin order)."""
    f = np.fft.fftfreq(size)
    return np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)


def mean_power_spectrum(patches: np.ndarray) -> np.ndarray:
    """Mean ``|FFT|² / N`` of mean-free patches; its mean equals their mean variance."""
    spectra = np.abs(np.fft.fftn(patches, axes=(1, 2, 3))) ** 2
    return spectra.mean(axis=0) / patches[0].size


def autocorrelation_power_spectrum(patches: np.ndarray, flat: float = 0.25) -> np.ndarray:
    """Power spectrum on a grid twice the patch size, from the unbiased autocorrelation.

    A patch's periodogram sees the autocorrelation times the triangle ``1 - |lag| / N`` (fewer
    voxel pairs at longer lags), so noise built from it is less correlated than the data:
    lag-1 axial correlation 0.42 instead of 0.45 on 16³ patches, i.e. R2R pairs whose noise
    is not quite the tomogram's. Here each lag is averaged over its own pair count, then
    tapered (flat up to ``flat * N``, cosine to zero at ``N``) because long lags rest on few
    pairs; negative spectral values of the tapered estimate are clipped. Against the
    simulator's true noise (three 128³ cases) ``flat`` 0.25 gave the smallest log-spectrum
    error, 0.055–0.058, vs 0.067–0.071 for a Hann taper and 0.156–0.210 for the periodogram.
    """
    n = patches.shape[1]
    grid = (2 * n,) * 3
    summed = np.zeros(grid)
    for start in range(0, len(patches), 32):  # bounded memory for many or large patches
        spectra = np.fft.fftn(patches[start : start + 32], s=grid, axes=(1, 2, 3))
        summed += (np.abs(spectra) ** 2).sum(axis=0)
    pair_products = np.real(np.fft.ifftn(summed))  # by lag, summed over voxel pairs
    lag = np.minimum(np.arange(2 * n), 2 * n - np.arange(2 * n))
    pairs_per_axis = np.maximum(n - lag, 0)  # voxel pairs at this lag along one axis
    ramp = np.clip((lag - flat * n) / ((1 - flat) * n), 0.0, 1.0)
    taper = np.where(lag < n, 0.5 * (1 + np.cos(np.pi * ramp)), 0.0)
    per_axis = taper / np.maximum(pairs_per_axis, 1)  # lags >= n: no pairs, taper 0
    weight = per_axis[:, None, None] * per_axis[None, :, None] * per_axis[None, None, :]
    autocorrelation = pair_products * weight / len(patches)
    return np.maximum(np.real(np.fft.fftn(autocorrelation)), 0.0)


def _separable_fit(spectrum: np.ndarray, along: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(RMS log residual, fit, fitted bins) of ``spectrum ≈ N(k_z, k_other) · M(k_along)``,
    fitted (least squares in log) only on bins at or above ``SEPARABLE_FROM`` along
    ``along`` or across it, where the patches hold no signal."""
    p = np.swapaxes(spectrum, 1, along)
    f = np.fft.fftfreq(p.shape[0])
    across = np.hypot(f[:, None], f[None, :])  # (k_z, k_other)
    fitted = (np.abs(f)[None, :, None] >= SEPARABLE_FROM) | (across[:, None, :] >= SEPARABLE_FROM)
    log_p = np.log(np.maximum(p, p.max() * 1e-6))
    weight = fitted.astype(float)
    log_n, log_m = np.zeros(p.shape[::2]), np.zeros(p.shape[1])
    for _ in range(_SEPARABLE_ITERATIONS):  # alternating means converge to the rank-1 fit
        log_n = ((log_p - log_m[None, :, None]) * weight).sum(1) / weight.sum(1)
        log_m = ((log_p - log_n[:, None, :]) * weight).sum((0, 2)) / weight.sum((0, 2))
    fit = log_n[:, None, :] + log_m[None, :, None]
    residual = float(np.sqrt(np.mean((log_p - fit)[fitted] ** 2)))
    return residual, np.swapaxes(np.exp(fit), 1, along), np.swapaxes(fitted, 1, along)


class CappedSpectrum(NamedTuple):
    spectrum: np.ndarray
    tilt_axis: int  # canonical axis (1 or 2) the separable fit runs along
    band_excess: tuple[float, ...]  # the measured over the fit's power per AUTO_CAP_BANDS, - 1

    @property
    def holds_signal(self) -> bool:
        """What the automatic rule caps: more power than the fit in any of the bands."""
        return max(self.band_excess) > AUTO_CAP_EXCESS


class SeparableFit(NamedTuple):
    tilt_axis: int  # canonical axis (1 or 2) the product runs along
    fit: np.ndarray
    fitted: np.ndarray  # the bins it was fitted on (no signal, no selection deficit)


def separable_noise_fit(spectrum: np.ndarray) -> SeparableFit:
    """The separable product (``_separable_fit``) along the in-plane axis that fits better."""
    fits = {axis: _separable_fit(spectrum, axis) for axis in (1, 2)}
    tilt_axis = min(fits, key=lambda axis: fits[axis][0])
    return SeparableFit(tilt_axis, fits[tilt_axis][1], fits[tilt_axis][2])


def cap_signal_in_spectrum(
    spectrum: np.ndarray, separable: SeparableFit | None = None
) -> CappedSpectrum:
    """The noise spectrum with the signal that background patches let in taken out, the
    tilt axis it was found along and how much power the fit finds in excess at low
    frequencies (``AUTO_CAP_BANDS``).

    In a single-axis reconstruction every plane across the tilt axis comes from its own
    detector row, so the noise spectrum is separable: a function of the two axes across the
    tilt axis times one of the tilt axis (shot noise: flat; detector blur or interpolation:
    its own shape). Signal is not, and lives at low frequencies. So the spectrum is fitted
    as such a product where the signal is weak (``SEPARABLE_FROM`` or more along the tilt
    axis or across it), the tilt axis being the in-plane axis that fits better, and below
    that on both, where thick specimens leave no signal-free patch, capped at the product.
    Measured against the true noise (suite cases, 16³ patches), power at 0.04-0.25
    cycles/voxel over the truth's: thick specimen 1.16-1.50x before, 0.96-1.05x after;
    64-thick one 1.01-1.82x, 1.00-1.19x; zero frame 0.95-1.51x, 0.92-1.10x; on cases with a
    clean background (where it is not applied automatically) it would lower those bands by
    11 % at most (the product is only nearly right there). ``separable``: the spectrum's
    ``separable_noise_fit``, if already made.
    """
    tilt_axis, fit, fitted = separable_noise_fit(spectrum) if separable is None else separable
    # Signal is where neighbouring bins together exceed the fit by SIGNAL_EXCESS; each of
    # those bins is capped at the fit. A per-bin minimum everywhere would also cut the
    # estimate's own scatter (10 % less power on signal-free patches); dividing each bin by
    # its neighbourhood's excess left signal in the strongest bins.
    excess = ndimage.uniform_filter(spectrum, 3, mode="wrap") / np.maximum(
        ndimage.uniform_filter(fit, 3, mode="wrap"), 1e-12
    )
    signal = ~fitted & (excess > 1 + SIGNAL_EXCESS)
    capped = np.where(signal, np.minimum(spectrum, fit), spectrum)
    radius = frequency_radius(spectrum.shape[0])
    excesses = []
    for lo, hi in AUTO_CAP_BANDS:
        band = (radius > lo) & (radius <= hi)
        excesses.append(float(spectrum[band].sum() / max(fit[band].sum(), 1e-30) - 1))
    return CappedSpectrum(capped, tilt_axis, tuple(excesses))


def fill_selection_deficit(spectrum: np.ndarray, separable: SeparableFit) -> np.ndarray:
    """``spectrum`` with every bin below ``SEPARABLE_FROM`` raised to the ``separable`` fit
    of the measured patches where it falls short of it.

    The background search keeps the boxes whose low-passed volume varies least, i.e. where
    the noise happens to be weak at low frequencies: on the nine suite cases with a clean
    background the true noise at the chosen boxes held 0.59-0.81x its power anywhere at
    0.04-0.08 cycles/voxel, and the fit follows. The validation's recorrupted copies then
    lack low-frequency noise and favour too narrow a Gaussian. The separable product, fitted
    where the patches hold neither signal nor that deficit, predicts the low band instead
    (0.97-1.20x the true noise there on clean cases)."""
    return np.where(separable.fitted, spectrum, np.maximum(spectrum, separable.fit))


def with_whole_volume_band(
    spectrum: np.ndarray, measured: np.ndarray, whole: SeparableFit
) -> np.ndarray:
    """``spectrum`` with its bins at ``WHOLE_VOLUME_FROM`` < |k| <= ``SEPARABLE_FROM`` taken
    from ``whole``, the separable fit of boxes drawn anywhere in the volume, scaled to the
    patches' ``measured`` power on the bins that fit was made on (the noise in the
    background, not the volume's average)."""
    level = measured[whole.fitted].sum() / max(whole.fit[whole.fitted].sum(), 1e-30)
    radius = frequency_radius(spectrum.shape[0])
    band = (radius > WHOLE_VOLUME_FROM) & (radius <= SEPARABLE_FROM) & ~whole.fitted
    return np.where(band, level * whole.fit, spectrum)


@dataclass(frozen=True)
class SpectralFit:
    """The spectral model's filter and what the cap took out of the patches' spectrum."""

    kernel: np.ndarray
    signal_share: float  # of the patches' power, judged signal and capped out (0 to 1)
    tilt_axis: int  # canonical axis (1 or 2); 0 when not capped
    validation_kernel: np.ndarray  # with the search's low-band deficit filled


def fit_spectrum(
    patches: np.ndarray, cap: bool | None, whole: Callable[[], SeparableFit | None] | None = None
) -> SpectralFit:
    """A centred real filter (twice the patch size) whose transfer function is the square
    root of the patches' power spectrum, with the signal they hold capped out if ``cap``
    (None: where at least ``AUTO_CAP_MIN_PATCHES`` patches hold ``AUTO_CAP_EXCESS`` more
    power than the separable fit in a low band, ``CappedSpectrum.holds_signal``). Where it
    caps, the band above ``WHOLE_VOLUME_FROM`` comes from the fit ``whole`` returns, if
    given and not None (``with_whole_volume_band``); it is called only there, as drawing
    its boxes costs reads all over the volume."""
    measured = autocorrelation_power_spectrum(patches)
    separable = separable_noise_fit(measured)  # for the cap and the validation's fill
    spectrum, tilt_axis, share = measured, 0, 0.0
    if cap or (cap is None and len(patches) >= AUTO_CAP_MIN_PATCHES):
        capped = cap_signal_in_spectrum(measured, separable)
        if cap or capped.holds_signal:
            spectrum, tilt_axis = capped.spectrum, capped.tilt_axis
            # what the cap took out: the band below may put back more than that
            share = float(1 - spectrum.sum() / max(measured.sum(), 1e-30))
            anywhere = whole() if whole is not None else None
            if anywhere is not None:
                spectrum = with_whole_volume_band(spectrum, measured, anywhere)
    validation = fill_selection_deficit(spectrum, separable)
    return SpectralFit(
        kernel_for_spectrum(spectrum), share, tilt_axis, kernel_for_spectrum(validation)
    )


def kernel_for_spectrum(spectrum: np.ndarray) -> np.ndarray:
    """The centred real filter whose transfer function is the square root of ``spectrum``."""
    return np.fft.fftshift(np.real(np.fft.ifftn(np.sqrt(spectrum)))).astype(np.float32)


def kernel_spectrum(kernel: np.ndarray) -> np.ndarray:
    """The power spectrum of noise drawn with the centred ``kernel`` (the inverse of
    ``kernel_for_spectrum``)."""
    return np.abs(np.fft.fftn(np.fft.ifftshift(kernel))) ** 2


def spectral_kernel(patches: np.ndarray, cap: bool | None = False) -> np.ndarray:
    """``fit_spectrum``'s filter alone."""
    return fit_spectrum(patches, cap).kernel


def fft_conv3d(
    white: torch.Tensor,
    kernel: torch.Tensor,
    spectra: dict[tuple[Any, ...], torch.Tensor] | None = None,
) -> torch.Tensor:
    """'Valid' 3D correlation of ``(B, 1, *S)`` fields with a ``(k, k, k)`` kernel via FFT.

    The transforms are zero-padded to the next 2·3·5-smooth length, where the circular
    wrap-around still misses the valid part: a 40³ crop's field is 71³ for a 32³ kernel,
    and 71 is prime (two 71³ fields took 18.7 ms, padded to 72³ 8.7 ms, 2-core CPU).
    ``spectra`` keeps a fixed kernel's transform per padded size: it cost as much as
    transforming the pair sampler's two white fields."""
    size = white.shape[-3:]
    padded = tuple(next_fast_len(n, real=True) for n in size)
    k = kernel.shape
    # a trainable kernel changes every step: its transform goes into a throwaway cache
    cache = {} if spectra is None or kernel.requires_grad else spectra
    # the version counter tells a kernel changed in place (load_state_dict) from the same one
    kernel_id = (kernel.device, kernel.data_ptr(), kernel._version)
    if any(key[0] != kernel_id for key in cache):
        cache.clear()
    if (kernel_id, padded) not in cache:
        cache[kernel_id, padded] = torch.fft.rfftn(kernel.flip((0, 1, 2)), s=padded)
    full = torch.fft.irfftn(torch.fft.rfftn(white, s=padded) * cache[kernel_id, padded], s=padded)
    return full[..., k[0] - 1 : size[0], k[1] - 1 : size[1], k[2] - 1 : size[2]]


class SpectralNoise(nn.Module):
    """Stationary Gaussian noise with the patches' mean power spectrum."""

    kind = "spectral"

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("kernel", kernel.float())
        self.spectra: dict[tuple[Any, ...], torch.Tensor] = {}

    def init_args(self) -> dict[str, Any]:
        return {"kernel_size": int(self.kernel.shape[0])}

    def white_shape(self, shape: tuple[int, int, int]) -> tuple[int, ...]:
        return tuple(s + self.kernel.shape[0] - 1 for s in shape)

    def forward(self, white: torch.Tensor) -> torch.Tensor:
        return fft_conv3d(white, self.kernel, self.spectra)

    def voxel_variance(self) -> float:
        """The variance of every voxel drawn: each is a sum of unit white draws weighted by
        the kernel (not so for a GAN, whose non-linear branch adds to it)."""
        return float(self.kernel.detach().pow(2).sum())

    def sample(
        self, batch: int, shape: tuple[int, int, int], generator: torch.Generator
    ) -> torch.Tensor:
        """``(batch, 1, *shape)`` noise; ``generator`` fixes the white field."""
        device = self.kernel.device
        white = torch.randn(
            (batch, 1, *self.white_shape(shape)), generator=generator, device=generator.device
        ).to(device)
        return self(white)


class GANNoiseGenerator(SpectralNoise):
    """Spectral filter (trainable) plus a small non-linear branch, trained as a WGAN-GP."""

    kind = "gan"

    def __init__(self, kernel: torch.Tensor, width: int = 16):
        super().__init__(kernel)
        self.kernel = nn.Parameter(self.kernel.detach().clone())
        self.width = width
        self.body = nn.Sequential(
            nn.Conv3d(2, width, 3),
            nn.LeakyReLU(0.1),
            nn.Conv3d(width, width, 3),
            nn.LeakyReLU(0.1),
            nn.Conv3d(width, 1, 1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.log_gain = nn.Parameter(torch.zeros(()))

    def init_args(self) -> dict[str, Any]:
        return {"kernel_size": int(self.kernel.shape[0]), "width": self.width}

    def white_shape(self, shape: tuple[int, int, int]) -> tuple[int, ...]:
        return tuple(s + self.kernel.shape[0] - 1 + 2 * _BODY_MARGIN for s in shape)

    def forward(self, white: torch.Tensor) -> torch.Tensor:
        linear = fft_conv3d(white, self.kernel)
        k = self.kernel.shape[0] // 2
        n = linear.shape[-3:]
        centre = white[..., k : k + n[0], k : k + n[1], k : k + n[2]]
        residual = self.body(torch.cat([linear, centre], dim=1))
        m = _BODY_MARGIN
        return torch.exp(self.log_gain) * (linear[..., m:-m, m:-m, m:-m] + residual)


class Critic(nn.Module):
    """A small 3D convolutional critic (no normalisation layers, as WGAN-GP requires)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(2 * width, 4 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(4 * width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3, 4))


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    eps = torch.rand(real.shape[0], 1, 1, 1, 1, device=real.device)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _autocorrelation(patches: np.ndarray, axis: int, lag: int) -> float:
    a = np.take(patches, range(patches.shape[axis] - lag), axis=axis)
    b = np.take(patches, range(lag, patches.shape[axis]), axis=axis)
    return float((a * b).mean() / patches.var())


def noise_fidelity(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """How closely generated patches match held-out real ones (0 is perfect for *_error).

    ``log_psd_error``: RMS of log10 power-spectrum ratio; ``hist_error``: Wasserstein-1
    distance of voxel values over the real std; ``autocorr_error``: largest difference of
    the lag-1..3 autocorrelations along the thickness (axial) axis and lag-1 in plane.
    """
    psd_gen, psd_real = mean_power_spectrum(generated), mean_power_spectrum(real)
    mask = psd_real > psd_real.max() * 1e-6
    log_ratio = np.log10(np.maximum(psd_gen[mask], 1e-12) / psd_real[mask])
    rng = np.random.default_rng(0)
    g = rng.choice(generated.ravel(), size=min(200_000, generated.size), replace=False)
    r = rng.choice(real.ravel(), size=min(200_000, real.size), replace=False)
    lags = [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1)]  # (array axis incl. batch, lag)
    ac_gen = [_autocorrelation(generated, a, lag) for a, lag in lags]
    ac_real = [_autocorrelation(real, a, lag) for a, lag in lags]
    return {
        "log_psd_error": float(np.sqrt(np.mean(log_ratio**2))),
        "hist_error": float(stats.wasserstein_distance(g, r) / real.std()),
        "variance_ratio": float(generated.var() / real.var()),
        "kurtosis": float(stats.kurtosis(g)),
        "kurtosis_real": float(stats.kurtosis(r)),
        "axial_autocorr": ac_gen[0],
        "axial_autocorr_real": ac_real[0],
        "autocorr_error": float(np.max(np.abs(np.subtract(ac_gen, ac_real)))),
    }


def fidelity_score(fidelity: dict[str, float]) -> float:
    """One number to rank noise models by (lower is better)."""
    return (
        fidelity["log_psd_error"]
        + fidelity["hist_error"]
        + fidelity["autocorr_error"]
        + 2 * abs(np.log(fidelity["variance_ratio"]))
    )


@torch.no_grad()
def sample_patches(
    model: SpectralNoise, count: int, size: int, generator: torch.Generator
) -> np.ndarray:
    """``count`` mean-free generated patches, for fidelity checks and display."""
    chunks = []
    for start in range(0, count, 32):
        n = min(32, count - start)
        chunks.append(model.sample(n, (size,) * 3, generator)[:, 0].cpu().numpy())
    out = np.concatenate(chunks)
    return out - out.mean(axis=(1, 2, 3), keepdims=True)


def held_out_fidelity(
    model: SpectralNoise, held_out: np.ndarray, generator: torch.Generator
) -> dict[str, float]:
    """``noise_fidelity`` of ``model`` against held-out patches: four drawn per real one,
    of their size, so the generated side adds little scatter of its own."""
    drawn = sample_patches(model, len(held_out) * 4, held_out.shape[1], generator)
    return noise_fidelity(drawn, held_out)


@torch.no_grad()
def calibrate_gain(model: GANNoiseGenerator, variance: float, generator: torch.Generator):
    """Rescale the generator so that its output variance is ``variance``."""
    size = model.kernel.shape[0]
    samples = sample_patches(model, 64, size, generator)
    model.log_gain += 0.5 * float(np.log(variance / samples.var()))


def iter_fit_gan(
    train: np.ndarray,
    held_out: np.ndarray,
    config: NMSGConfig,
    device: torch.device,
    generator: torch.Generator,
    spectral: np.ndarray,
) -> EventStream[tuple[GANNoiseGenerator, dict[str, float]]]:
    """WGAN-GP (paper recipe: Adam 1e-4, betas 0.5/0.999, 5 critic steps, GP weight 10).

    Initialised at the spectral solution (``spectral``, its filter); the snapshot with the
    best held-out fidelity is returned, calibrated to the spectral fit's voxel variance:
    where the cap judged part of the patches' power signal, their raw variance holds that
    signal too (1-2 % on the capped suite cases), and the inference pairs, which no local
    amplitude map rescales, would add that much more noise than the spectral model's.
    """
    size = train.shape[-1]
    gen = GANNoiseGenerator(torch.from_numpy(spectral), config.gan_width).to(device)
    critic = Critic(config.gan_width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.999))
    real_all = torch.from_numpy(train).to(device)[:, None]
    pick = torch.Generator().manual_seed(config.seed)  # indices are drawn on the CPU
    variance = SpectralNoise(torch.from_numpy(spectral)).voxel_variance()
    check_every = max(1, config.gan_steps // 5)

    def snapshot() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        calibrate_gain(gen, variance, generator)
        fid = held_out_fidelity(gen, held_out, generator)
        return {k: v.detach().clone() for k, v in gen.state_dict().items()}, fid

    best_state, best_fid = snapshot()
    for step in range(1, config.gan_steps + 1):
        for _ in range(5):
            idx = torch.randint(len(real_all), (config.gan_batch,), generator=pick)
            real = real_all[idx.to(device)]
            with torch.no_grad():
                fake = gen.sample(config.gan_batch, (size,) * 3, generator)
            fake = fake - fake.mean(dim=(2, 3, 4), keepdim=True)
            wasserstein = critic(real).mean() - critic(fake).mean()
            loss_c = -wasserstein + 10.0 * gradient_penalty(critic, real, fake)
            opt_c.zero_grad()
            loss_c.backward()
            opt_c.step()
        fake = gen.sample(config.gan_batch, (size,) * 3, generator)
        loss_g = -critic(fake - fake.mean(dim=(2, 3, 4), keepdim=True)).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        metrics = {"wasserstein": wasserstein.item(), "loss_g": loss_g.item()}
        if step % check_every == 0 or step == config.gan_steps:
            state, fid = snapshot()
            metrics["fidelity"] = fidelity_score(fid)
            if fidelity_score(fid) < fidelity_score(best_fid):
                best_state, best_fid = state, fid
        yield Progress("noise-model", step, config.gan_steps, metrics)
    gen.load_state_dict(best_state)
    return gen, best_fid


def build_noise_model(kind: str, args: dict[str, Any]) -> SpectralNoise:
    """An empty model of the saved kind and shape, ready for ``load_state_dict``."""
    kernel = torch.zeros((args["kernel_size"],) * 3)
    if kind == "spectral":
        return SpectralNoise(kernel)
    if kind == "gan":
        return GANNoiseGenerator(kernel, args["width"])
    raise ValueError(f"unknown noise model kind {kind!r}")
