"""Fit the denoiser on pairs synthesised on the fly from random crops.

``iter_train`` takes a *pair sampler* so the same loop trains NMSG (pairs from the noise
model) and the reference methods of the benchmark (Noise2Noise on even/odd halves,
supervised on a ground truth) with the identical network, schedule and budget.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from .config import NMSGConfig
from .device import conv_memory_format
from .events import Event, EventStream, Progress
from .losses import nmsg_loss
from .noise_amplitude import AmplitudeSource
from .noise_model import SpectralNoise
from .pairs import make_pair
from .symmetry import apply_symmetry
from .tiling import VolumeSource
from .unet import UNet3D
from .validation import training_region
from .volume import NormalisedVolume

Tensor = torch.Tensor
# (rng, torch generator) -> (network input, target, noisy crop the loss guides come from)
PairSampler = Callable[[np.random.Generator, torch.Generator], tuple[Tensor, Tensor, Tensor]]
# Crops of more fill than this are drawn again: they would spend the step on "flat stays
# flat". Fill reads as the data's median and gets no model noise, as the network meets it at
# inference, so a crop with some fill teaches the data/fill edge and needs no loss mask.
# Measured (48³ in an 8-voxel zero frame, 300 steps, seeds 0/1; unframed 25.50/25.63 dB):
# model noise added to fill too 24.84/25.12, crops without any fill 25.52/25.86, fill kept
# flat 25.78/26.08. Noise on noiseless fill asks the network to erase noise of another level.
MAX_CROP_FILL = 0.5
VALIDATE_EVERY = 100  # steps between scores of the weight average
# Scores start after this share of the schedule. With the cosine decay the weight average
# only gets better until late: on four 128³ suite cases (fast preset, 2400 steps) the
# validation loss fell almost monotonically and its best came at step 2000-2300, and the
# quality preset's on the 4 Å crowded case at step 2600 of 3000. A score costs about 16
# training steps (0.66 s against 0.04 s on 2 cores: two passes over a 96×48×128 window),
# so scoring from the start took 13 % of the fast preset's time.
VALIDATE_FROM = 2 / 3
_REDRAWS = 10


def unet_for(config: NMSGConfig, base_sigma: float) -> UNet3D:
    """The untrained U-Net ``config`` describes, correcting a Gaussian of ``base_sigma``."""
    return UNet3D(
        config.unet_depth,
        config.unet_width,
        config.space_to_depth,
        base_sigma,
        additive_skips=config.additive_skips,
    )


def crop_shape(shape: tuple[int, ...], crop: int, multiple: int) -> tuple[int, int, int]:
    """The training crop: ``crop`` per axis, shrunk to fit a small volume."""
    return tuple(min(crop, (s // multiple) * multiple) for s in shape)


def random_crops(
    sources: list[VolumeSource],
    size: tuple[int, int, int],
    count: int,
    rng: np.random.Generator,
    accept: Callable[[tuple[slice, ...]], bool] | None = None,
) -> list[np.ndarray]:
    """The same ``count`` random crops of each source, ``(count, 1, *size)`` each.

    A region that ``accept`` turns down is drawn again (the last of a few draws is kept).
    """
    shape = sources[0].shape
    batches: list[list[np.ndarray]] = [[] for _ in sources]
    for _ in range(count):
        for _ in range(_REDRAWS):
            corner = [int(rng.integers(0, s - c + 1)) for s, c in zip(shape, size, strict=True)]
            region = tuple(slice(c, c + n) for c, n in zip(corner, size, strict=True))
            if accept is None or accept(region):
                break
        for batch, source in zip(batches, sources, strict=True):
            batch.append(source.read(region))
    return [np.stack(batch)[:, None] for batch in batches]


def augment_inplane(tensors: list[Tensor], rng: np.random.Generator, turns: bool) -> list[Tensor]:
    """The same random in-plane flips, and 90° turns with ``turns``, for each sample of
    every tensor.

    Applied to finished pairs, never to one side only: WBP noise is anisotropic in plane
    (tilt axis vs the axis normal to it), so turning a crop but not the noise added to it
    would pair noises of different spectra. Never across the wedge axis.
    """
    batch = tensors[0].shape[0]
    turns = turns and tensors[0].shape[-1] == tensors[0].shape[-2]
    out: list[list[Tensor]] = [[] for _ in tensors]
    for b in range(batch):
        flips = tuple(d for d, f in ((-2, rng.random() < 0.5), (-1, rng.random() < 0.5)) if f)
        quarters = int(rng.integers(4)) if turns else 0
        for items, tensor in zip(out, tensors, strict=True):
            items.append(apply_symmetry(tensor[b], flips, quarters))
    return [torch.stack(items) for items in out]


class _DataVoxels:
    """1 on data and 0 on fill, read with the same crops as the volume."""

    def __init__(self, volume: NormalisedVolume):
        self.volume = volume
        self.shape = volume.shape

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        return (~self.volume.fill_mask(region)).astype(np.float32)


def noise_model_pairs(
    source: NormalisedVolume,
    noise_model: SpectralNoise,
    config: NMSGConfig,
    device: torch.device,
    multiple: int,
    amplitude: np.ndarray | None = None,
    held_out: int = 0,
) -> PairSampler:
    """NMSG pairs: crops of the noisy volume recorrupted with noise-model samples, scaled
    by the local noise ``amplitude`` map (coarse, see ``noise_amplitude``) when given.
    The last ``held_out`` rows of the tilt axis are left to validation."""
    region = training_region(source, held_out)  # starts at the origin: same coordinates
    size = crop_shape(region.shape, config.crop, multiple)
    noise_model = noise_model.to(device).eval()
    sources: list[VolumeSource] = [region]
    if amplitude is not None:
        sources.append(AmplitudeSource(amplitude, source.shape))
    accept = None
    if source.fill is not None:
        sources.append(_DataVoxels(source))

        def accept(region: tuple[slice, ...]) -> bool:
            return float(source.fill_mask(region).mean()) <= MAX_CROP_FILL

    def sample(rng: np.random.Generator, generator: torch.Generator):
        crops = random_crops(sources, size, config.batch_size, rng, accept)
        noisy = torch.from_numpy(crops[0]).to(device)
        with torch.no_grad():
            noise = noise_model.sample(config.batch_size, size, generator)
            if amplitude is not None:
                noise = noise * torch.from_numpy(crops[1]).to(device)
            if accept is not None:  # fill stays flat, as the network meets it at inference
                noise = noise * torch.from_numpy(crops[-1]).to(device)
        inputs, targets = make_pair(noisy, noise, config.pairing, config.alpha)
        return tuple(augment_inplane([inputs, targets, noisy], rng, config.turns))

    return sample


def mixed_pairs(samplers: Sequence[PairSampler]) -> PairSampler:
    """Pairs of several volumes: one volume's sampler, chosen at random, for every batch."""
    if len(samplers) == 1:
        return samplers[0]

    def sample(rng: np.random.Generator, generator: torch.Generator):
        return samplers[int(rng.integers(len(samplers)))](rng, generator)

    return sample


def aligned_pairs(
    inputs: NormalisedVolume,
    targets: NormalisedVolume,
    config: NMSGConfig,
    device: torch.device,
    multiple: int,
    swap: bool = False,
) -> PairSampler:
    """Pairs from two aligned volumes (even/odd halves, or noisy/ground truth).

    With ``swap`` each batch randomly trains either direction (Noise2Noise symmetry).
    """
    size = crop_shape(inputs.shape, config.crop, multiple)

    def sample(rng: np.random.Generator, generator: torch.Generator):
        a, b = random_crops([inputs, targets], size, config.batch_size, rng)
        if swap and rng.random() < 0.5:
            a, b = b, a
        x, t = augment_inplane(
            [torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)], rng, config.turns
        )
        return x, t, x

    return sample


class DivergenceGuard:
    """Tells a diverging step by its loss: over ``factor`` × the recent median, or NaN.

    Adam at the presets' learning rate can leave the stable region late in a long run
    (measured: a 3000-step run at lr 3e-3 went from loss 1.98 to 5·10⁷ within 50 steps
    near step 1040, and the weights never fully recovered). Clipping gradients does not
    prevent it, because Adam rescales them. The factor leaves room for honest variation:
    with a noiseless target (the benchmark's supervised row) one crop's loss reached
    2.06× the median of the previous 25, while the divergence grew losses 100-fold.
    """

    def __init__(self, factor: float = 10.0, window: int = 25):
        self.factor = factor
        self.recent: deque[float] = deque(maxlen=window)

    def diverged(self, loss: float) -> bool:
        full = len(self.recent) == self.recent.maxlen
        if full and not loss <= self.factor * float(np.median(self.recent)):
            return True
        self.recent.append(loss)
        return False


def lr_factor(step: int, total: int, warmup: float) -> float:
    """The learning rate at ``step`` as a share of its peak: a linear rise over the first
    ``warmup`` share of the ``total`` steps, then a cosine decay to 5 %."""
    rise = min(1.0, (step + 1) / (warmup * total + 1))
    return rise * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def validation_steps(total: int) -> set[int]:
    """The steps at which the weight average is scored: every ``VALIDATE_EVERY`` from
    ``VALIDATE_FROM`` of the schedule on, and the last step."""
    first = VALIDATE_FROM * total
    return {s for s in range(VALIDATE_EVERY, total + 1, VALIDATE_EVERY) if s >= first} | {total}


def iter_train(
    pairs: PairSampler,
    config: NMSGConfig,
    device: torch.device,
    on_checkpoint: Callable[[UNet3D], Iterable[Event]] | None = None,
    validate: Callable[[UNet3D], float] | None = None,
) -> EventStream[UNet3D]:
    """Adam with cosine decay after ``lr_warmup``; returns the weight average (EMA), which
    is steadier (§3).

    A diverging step is not taken: the network goes back to the weight average, Adam's
    moments are reset and the learning rate is halved (``rollbacks`` in the metrics).
    With ``validate`` (a loss, lower is better) the weight average is scored at
    ``validation_steps`` and the best one is returned. Training does not stop early:
    on a 96³ volume, whose held-out rows hold little signal, stopping after 6 scores
    without gain ended at step ~700 with 26.80 dB, where the full budget gave 27.41.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    base = config.base_sigma or 0.0  # None (chosen by validation) is resolved by callers
    net = unet_for(config, base)
    net = net.to(device, memory_format=conv_memory_format(device, training=True))
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, config.train_steps, config.lr_warmup)
    )
    guard, rollbacks = DivergenceGuard(), 0
    best_loss, best_state = np.inf, None
    scored = validation_steps(config.train_steps)
    for step in range(1, config.train_steps + 1):
        inputs, targets, noisy = pairs(rng, generator)
        # full precision on purpose: bfloat16 autocast (base still float32) made a step 1.5x
        # shorter on an AVX512-BF16 CPU but cost the fast preset 0.04 dB over three seeds
        loss, parts = nmsg_loss(net(inputs), targets, noisy, config)
        if guard.diverged(parts["loss"]):
            rollbacks += 1
            net.load_state_dict(ema.state_dict())
            optimiser.state.clear()
            schedule.base_lrs = [lr * 0.5 for lr in schedule.base_lrs]
        else:
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            with torch.no_grad():
                decay = min(config.ema_decay, (1 + step) / (10 + step))
                for avg, cur in zip(ema.parameters(), net.parameters(), strict=True):
                    avg.lerp_(cur, 1 - decay)
        schedule.step()
        if rollbacks:
            parts = {**parts, "rollbacks": float(rollbacks)}
        last = step == config.train_steps
        if validate is not None and step in scored:
            parts = {**parts, "validation": validate(ema)}
            if parts["validation"] < best_loss:
                best_loss = parts["validation"]
                best_state = copy.deepcopy(ema.state_dict())
        yield Progress("train", step, config.train_steps, parts)
        if on_checkpoint is not None and (step % config.preview_every == 0 or last):
            yield from on_checkpoint(ema)
    if best_state is not None:
        ema.load_state_dict(best_state)
    return ema
