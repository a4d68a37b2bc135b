"""What inference applies to a volume: the network, its pairing's correction and the
averaged ±noise pairs, as one function of a batch of windows."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from .config import NMSGConfig
from .device import conv_memory_format, inference_dtype
from .model import NMSGModel
from .noise_model import SpectralNoise
from .pairs import average_over_pairs, noisier2noise_estimate
from .tiling import Predictor
from .unet import UNet3D

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
    correction for that pairing."""
    # copies: moving the model's own modules would leave the caller's model on the GPU
    net = copy.deepcopy(model.denoiser).to(device, memory_format=conv_memory_format(device))
    noise = copy.deepcopy(model.noise_model).to(device)
    net.eval()
    noise.eval()
    generator = torch.Generator(device=device).manual_seed(model.config.seed)
    config = model.config
    amp_dtype = inference_dtype(device, config.amp)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return net(x).float()

    run = estimator(forward, config)

    @torch.inference_mode()
    def predict(batch: torch.Tensor) -> torch.Tensor:
        if not config.inference_pairs:
            return run(batch)
        draws = pair_draws(noise, config, batch.shape[0], tuple(batch.shape[-3:]), generator)
        return average_over_pairs(run, batch, draws)

    return predict


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
    net: UNet3D,
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
    return lambda x: average_over_pairs(run, x, draws)
