"""What inference applies to a volume: the network, its pairing's correction and the
averaged ±noise pairs, as one function of a batch of windows."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .config import NMSGConfig
from .device import conv_memory_format, inference_dtype
from .model import NMSGModel
from .noise_model import SpectralNoise
from .pairs import average_over_pairs, noisier2noise_estimate
from .tiling import Predictor
from .unet import Denoiser

Estimator = Callable[[torch.Tensor], torch.Tensor]


def estimator(network: Estimator, config: NMSGConfig) -> Estimator:
    """The estimate of the clean volume from one input: the network's output, with the
    Noisier2Noise correction for that pairing."""

    def estimate(x: torch.Tensor) -> torch.Tensor:
        out = network(x)
        return noisier2noise_estimate(out, x) if config.pairing == "noisier2noise" else out

    return estimate


def make_predictor(model: NMSGModel, device: torch.device) -> Predictor:
    """The inference function: ``f(y)``, or the mean over ``inference_pairs`` pairs of
    recorrupted copies ``y ± s·z`` (``average_over_pairs``), with the Noisier2Noise
    correction for that pairing. Each tile's ``z`` comes from its own place
    (``tile_pair_draws``), so the output does not depend on how tiles are batched."""
    # copies: moving the model's own modules would leave the caller's model on the GPU
    net = copy.deepcopy(model.denoiser).to(device, memory_format=conv_memory_format(device))
    noise = copy.deepcopy(model.noise_model).to(device)
    net.eval()
    noise.eval()
    config = model.config
    amp_dtype = inference_dtype(device, config.amp)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return net(x).float()

    run = estimator(forward, config)

    @torch.inference_mode()
    def predict(batch: torch.Tensor, corners: Sequence[tuple[int, ...]]) -> torch.Tensor:
        if not config.inference_pairs:
            return run(batch)
        draws = tile_pair_draws(noise, config, corners, tuple(batch.shape[-3:]), device)
        return average_over_pairs(run, batch, draws, config.turns)

    return predict


def tile_pair_draws(
    noise: SpectralNoise,
    config: NMSGConfig,
    corners: Sequence[tuple[int, ...]],
    shape: tuple[int, ...],
    device: torch.device,
) -> list[torch.Tensor]:
    """``pair_draws`` for a batch of tiles, each tile's from a seed of the model's seed and
    the tile's corner: the same tile gets the same noise whatever the tile batch, or a
    retry with a smaller one after the GPU ran out of memory."""
    scale = config.alpha if config.pairing == "r2r" else 1.0
    white = []
    for corner in corners:
        seed = int(np.random.SeedSequence([config.seed, *corner]).generate_state(1)[0])
        generator = torch.Generator(device=device).manual_seed(seed)
        size = (config.inference_pairs, 1, *noise.white_shape(shape))
        white.append(torch.randn(size, generator=generator, device=device))
    per_pair = torch.stack(white, dim=1)  # (pairs, tiles, 1, ...)
    return [scale * noise(w) for w in per_pair]


def pair_draws(
    noise: SpectralNoise,
    config: NMSGConfig,
    batch: int,
    shape: tuple[int, ...],
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """The noise of ``config.inference_pairs`` pairs, as strong as the training pairs add it."""
    scale = config.alpha if config.pairing == "r2r" else 1.0
    return [scale * noise.sample(batch, shape, generator) for _ in range(config.inference_pairs)]


def validated_estimator(
    net: Denoiser,
    noise: SpectralNoise,
    config: NMSGConfig,
    shape: tuple[int, ...],
    device: torch.device,
) -> Estimator:
    """What inference returns for one ``shape`` window, as a deterministic function (fixed
    pair draws), so that its risk can be estimated by finite differences."""
    run = estimator(net.to(device).eval(), config)
    if not config.inference_pairs:
        return run
    generator = torch.Generator(device=device).manual_seed(config.seed + 104729)
    with torch.no_grad():
        draws = pair_draws(noise.to(device), config, 1, shape, generator)
    return lambda x: average_over_pairs(run, x, draws, config.turns)
