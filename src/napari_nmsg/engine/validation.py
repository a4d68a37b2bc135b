"""Self-supervised validation: how good is a denoiser, without a clean volume?

Both estimates below need the model noise ``z`` to be as strong as the real noise ``n``,
and are computed on rows of the tilt axis the network never trains on. ``z`` comes from the
spectral fit even where a GAN trains the network: a strong denoiser's risk is a few percent
of the noise power, and the GAN's power, measured 2.3 % high, had turned it negative. The
recorrupted copies take the fit with the low band that the background search leaves short
filled (``noise_model.fill_selection_deficit``): short of it, they favoured too narrow a
Gaussian base. Stein's probes keep the fit itself: with the filled band the estimate claimed
+2.3 and +5.1 dB on two suite cases whose results beat the oracle Gaussian by 1.4 and 2.6
(with the fit: +0.5 and +3.4).

- The recorrupted loss of ``f(y + αz)`` against ``y − z/α`` equals the error of
  ``f(y + αz)`` against the clean volume plus a constant, ``E|n − z/α|²``. It is cheap (one
  pass per copy) and ranks checkpoints.
- Stein's unbiased risk estimate judges what the user gets, an estimator applied to ``y``
  itself: ``|f(y) − y|² − |n|² + 2 tr(Σ ∂f/∂y)``, the trace by finite differences along
  model-noise probes. It compares the result with the Gaussian filter best for ``y`` and
  gives the user an estimated gain. The recorrupted loss cannot: it sees an input twice as
  noisy as the user's, and had called networks better than that Gaussian where they were
  0.2–0.7 dB worse. Both are only as right as the model noise: where its low-frequency
  power is off by more than the network's gain (signal in the noise patches, README Case
  suite), the sign can be wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .noise_amplitude import AmplitudeSource
from .noise_model import SpectralNoise
from .tiling import VolumeSource, Window
from .unet import gaussian_blur, gaussian_kernel
from .volume import NormalisedVolume

SIGMAS = tuple(np.round(np.arange(0.5, 4.01, 0.25), 2))
_MAX_DEPTH, _MAX_WIDTH = 96, 160  # the validation window's extent along Z and X
_MAX_ROWS = 32  # held-out rows of the tilt axis
_OVER_SMOOTHED = 1.25  # low-passed residual power over the noise's: above it, signal went
_PROBES = 2  # model-noise draws for the divergence (its spread: ~3 % of a denoiser's risk)
_STEP = 0.05  # finite-difference step, in units of the noise
# Risks are floored at this share of the noise power. A squared error cannot be below 0; a
# Stein estimate at or below the floor means the model noise does not fit the volume.
_RISK_FLOOR = 1e-3


def held_out_rows(rows: int, multiple: int) -> int:
    """How many rows at the end of the tilt axis (canonical axis 1) to keep from training:
    an eighth, as a multiple of the network's ``multiple``; 0 when the rest would be too
    small to train on."""
    count = max(multiple, min(_MAX_ROWS, rows // 8) // multiple * multiple)
    return count if rows - count >= 2 * multiple else 0


def training_region(source: NormalisedVolume, held_out: int) -> VolumeSource:
    """The part of ``source`` the network may train on: all but the held-out rows at the
    end of the data (inside any fill frame). It starts at the origin, so its coordinates
    are the volume's."""
    if not held_out:
        return source
    nz, _, nx = source.shape
    rows = slice(0, source.data_box[1].stop - held_out)
    return Window(source, (slice(0, nz), rows, slice(0, nx)))


def _centred(extent: slice, most: int, multiple: int) -> slice:
    length = extent.stop - extent.start
    size = max(multiple, min(length, most) // multiple * multiple)
    start = extent.start + (length - size) // 2
    return slice(start, start + size)


@dataclass(frozen=True)
class QualityEstimate:
    """What the validation says about a result, in words a user can act on.

    The gain is stated against the best Gaussian filter, not the noisy input: both risks
    share the error of the model noise's power, so their order is robust, while an
    absolute error needs the noise variance to better than a percent (at SNR 0.1 per tilt
    the clean signal holds a few percent of the variance); an error there shifts both
    risks alike and shrinks the dB figure toward 0.
    """

    gain_over_gaussian_db: float  # > 0: the result is estimated better than the Gaussian
    gaussian_sigma: float  # voxels, the Gaussian best for the input
    loss: float  # estimated squared error of the result (Stein; lower is better)
    gaussian_loss: float
    over_smoothed: bool
    fell_back: bool  # the network lost to the Gaussian, which was returned instead
    held_out: bool  # measured on rows never trained on (else in-sample, optimistic)
    implausible: bool = False  # risks too small to be true: the model noise is wrong

    def to_dict(self) -> dict[str, float | bool]:
        return dict(vars(self))

    def summary(self) -> str:
        notes = [
            f"estimated {self.gain_over_gaussian_db:+.2f} dB against the best Gaussian "
            f"filter (σ {self.gaussian_sigma:g} voxels)"
        ]
        if not self.held_out:
            notes.append("in-sample: the volume is too small to hold rows out")
        if self.fell_back:
            notes.append("the network did not beat that filter, so the filter was returned")
        if self.over_smoothed:
            notes.append("looks over-smoothed: what was removed holds structure")
        if self.implausible:
            notes.append(
                "not to be trusted: the noise model does not fit this volume (check where "
                "the noise patches came from)"
            )
        return "; ".join(notes)


class RecorruptedValidation:
    """Fixed recorrupted copies of a window whose last rows the network never trains on."""

    def __init__(
        self,
        source: NormalisedVolume,
        noise_model: SpectralNoise,
        amplitude: np.ndarray | None,
        alpha: float,
        held_out: int,
        multiple: int,
        device: torch.device,
        seed: int,
        recorrupting: SpectralNoise | None = None,
    ):
        """``recorrupting``: the noise of the recorrupted copies, if not ``noise_model``
        (the spectral fit with the background search's low-band deficit filled:
        ``NoiseLearning.validation_model``); Stein's probes always come from
        ``noise_model``."""
        recorrupting = noise_model if recorrupting is None else recorrupting
        for model in (noise_model, recorrupting):
            if model.kind != "spectral":
                raise ValueError(f"validation needs the spectral fit, not a {model.kind} model")
        box = source.data_box  # inside any fill frame
        end, ny = box[1].stop, box[1].stop - box[1].start
        context = min(max(16, 2 * multiple), ny - held_out) // multiple * multiple
        rows = held_out or min(ny, _MAX_ROWS) // multiple * multiple
        window = (
            _centred(box[0], _MAX_DEPTH, multiple),
            slice(max(0, end - rows - context), end),
            _centred(box[2], _MAX_WIDTH, multiple),
        )
        self.window = window  # in the volume's coordinates
        self.held_out = bool(held_out)
        self.scored = (slice(None), slice(None), slice(None), slice(context, None))
        shape = tuple(s.stop - s.start for s in window)
        noisy = torch.from_numpy(np.ascontiguousarray(source.read(window)))[None, None]
        generator = torch.Generator(device=device).manual_seed(seed + 7919)
        with torch.no_grad():  # all draws probe the divergence; z recorrupts the copies
            draws = noise_model.to(device).sample(_PROBES, shape, generator).cpu()
            z = draws[:1]
            if recorrupting is not noise_model:
                z = recorrupting.to(device).sample(1, shape, generator).cpu()
        scale = torch.ones(shape)  # the model noise's amplitude at each voxel
        if amplitude is not None:
            scale = scale * torch.from_numpy(AmplitudeSource(amplitude, source.shape).read(window))
        fill = source.fill_mask(window)
        if fill is not None:  # fill stays flat, as in training
            scale = scale * torch.from_numpy(~fill)
        draws, z = draws * scale, z * scale
        self.noisy = noisy.to(device)
        self.probes = [d[None].to(device) for d in draws]
        self.noise = self.probes[0]  # one model noise draw, as strong as the real noise
        # antithetic pair: the two copies' errors from z cancel to first order
        self.alpha = alpha
        self.inputs, self.targets = self._copies(self.noisy, z.to(device))
        # the expected power, not the probes' own: that varies by ~0.35 % between draws, a
        # quarter of a good denoiser's risk (a Gaussian's risk spread 7-8x less over seeds)
        self.noise_power = noise_model.voxel_variance() * float(
            scale.pow(2)[None, None][self.scored].mean()
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.noisy.shape[-3:])

    def _copies(self, noisy: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recorrupted inputs ``y ± αz`` and their targets ``y ∓ z/α``."""
        a = self.alpha
        return torch.cat([noisy + a * z, noisy - a * z]), torch.cat([noisy - z / a, noisy + z / a])

    def loss(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Mean squared difference of ``predict(y ± αz)`` from ``y ∓ z/α`` on scored rows
        (both copies in one batch: see ``average_over_pairs``)."""
        return self._loss(predict, self.inputs, self.targets)

    def _loss(
        self,
        predict: Callable[[torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
    ) -> float:
        with torch.no_grad():
            out = predict(inputs)
        return float(((out - targets)[self.scored] ** 2).mean())

    def risk(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Stein's estimate of the squared error of ``predict(y)`` against the clean volume
        on scored rows; ``predict`` must be deterministic (fixed noise draws, if any)."""
        with torch.no_grad():
            fit = float((predict(self.noisy) - self.noisy)[self.scored].pow(2).mean())
            divergence = 0.0
            for w in self.probes:
                step = _STEP * w
                slope = (predict(self.noisy + step) - predict(self.noisy - step)) / (2 * _STEP)
                divergence += float((w * slope)[self.scored].mean()) / len(self.probes)
        return fit - self.noise_power + 2 * divergence

    def gain_db(self, risk: float, reference: float) -> float:
        """Estimated dB by which ``risk`` beats ``reference`` (both floored, so that the
        sign always follows the risks)."""
        floor = _RISK_FLOOR * self.noise_power
        return float(10 * np.log10(max(reference, floor) / max(risk, floor)))

    def best_gaussian(self) -> tuple[float, float]:
        """(σ, recorrupted loss) of the Gaussian filter best for the recorrupted input."""
        return self._best_gaussian(self.loss)

    def best_gaussian_recorrupted_with_fit(self) -> float:
        """σ of the Gaussian filter best for copies recorrupted with the spectral fit itself
        (Stein's first probe), not with the filled model: the scale on which
        ``pipeline.QUARTER_TURNS_FROM_SIGMA`` was chosen (the filled model's is wider)."""
        inputs, targets = self._copies(self.noisy, self.noise)
        return self._best_gaussian(lambda predict: self._loss(predict, inputs, targets))[0]

    def best_gaussian_for_input(self) -> tuple[float, float]:
        """(σ, risk) of the Gaussian filter best for the input itself (``risk``'s finite
        differences are exact for a linear filter)."""
        return self._best_gaussian(self.risk)

    @staticmethod
    def _best_gaussian(score: Callable[[Callable], float]) -> tuple[float, float]:
        scores = {}
        for s in SIGMAS:
            taps = gaussian_kernel(float(s))
            scores[float(s)] = score(lambda x, t=taps: gaussian_blur(x, t))
        sigma = min(scores, key=scores.get)
        return sigma, scores[sigma]

    def implausible(self, *risks: float) -> bool:
        """Whether a risk is at or below the floor: then no dB figure from it means
        anything (measured: +15 dB claimed for a result 1.25 dB worse than the automatic
        search's, from noise patches too small for the noise's correlations)."""
        return min(risks) <= _RISK_FLOOR * self.noise_power

    def over_smoothed(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Whether the removed part ``y − f(y)`` holds more low-frequency power than noise
        does: a denoiser that removes only noise leaves a residual that looks like noise."""
        taps = gaussian_kernel(2.0)
        with torch.no_grad():
            residual = self.noisy - predict(self.noisy)
            removed = gaussian_blur(residual, taps)[self.scored].pow(2).mean()
            noise = gaussian_blur(self.noise, taps)[self.scored].pow(2).mean()
        return bool(removed > _OVER_SMOOTHED * noise)
