"""Fit the denoiser on pairs synthesised on the fly from random crops and model noise."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import numpy as np
import torch

from .config import NMSGConfig
from .events import Event, EventStream, Progress
from .losses import nmsg_loss
from .noise_model import SpectralNoise
from .pairs import make_pair
from .unet import UNet3D
from .volume import NormalisedVolume


def crop_shape(shape: tuple[int, ...], crop: int, multiple: int) -> tuple[int, int, int]:
    """The training crop: ``crop`` per axis, shrunk to fit a small volume."""
    return tuple(min(crop, (s // multiple) * multiple) for s in shape)


def random_crops(
    source: NormalisedVolume, size: tuple[int, int, int], count: int, rng: np.random.Generator
) -> np.ndarray:
    """Random crops with in-plane flips and 90° rotations (never across the wedge axis)."""
    crops = []
    for _ in range(count):
        corner = [int(rng.integers(0, s - c + 1)) for s, c in zip(source.shape, size, strict=True)]
        block = source.read(tuple(slice(c, c + n) for c, n in zip(corner, size, strict=True)))
        if rng.random() < 0.5:
            block = block[:, ::-1]
        if rng.random() < 0.5:
            block = block[:, :, ::-1]
        if size[1] == size[2]:
            block = np.rot90(block, k=int(rng.integers(4)), axes=(1, 2))
        crops.append(np.ascontiguousarray(block))
    return np.stack(crops)[:, None]


def iter_train(
    source: NormalisedVolume,
    noise_model: SpectralNoise,
    config: NMSGConfig,
    device: torch.device,
    on_checkpoint: Callable[[UNet3D], Iterable[Event]] | None = None,
) -> EventStream[UNet3D]:
    """Adam with cosine decay; returns the weight average (EMA), which is steadier (§3)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    net = UNet3D(config.unet_depth, config.unet_width).to(device)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, config.train_steps, eta_min=0.05 * config.lr
    )
    size = crop_shape(source.shape, config.crop, net.multiple)
    noise_model = noise_model.to(device).eval()
    amp = device.type == "cuda"
    for step in range(1, config.train_steps + 1):
        noisy = torch.from_numpy(random_crops(source, size, config.batch_size, rng)).to(device)
        with torch.no_grad():
            noise = noise_model.sample(config.batch_size, size, generator)
        inputs, targets = make_pair(noisy, noise, config.pairing, config.alpha)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = net(inputs)
        loss, parts = nmsg_loss(outputs.float(), targets, noisy, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for avg, cur in zip(ema.parameters(), net.parameters(), strict=True):
                avg.lerp_(cur, 1 - decay)
        yield Progress("train", step, config.train_steps, parts)
        if on_checkpoint is not None and (
            step % config.preview_every == 0 or step == config.train_steps
        ):
            yield from on_checkpoint(ema)
    return ema
