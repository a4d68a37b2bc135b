"""The long steps as event generators: learn the noise, fit the denoiser, denoise, and
``iter_run``, which chains them for every front end.

Front ends (CLI, napari widget, Dask tasks) drive these; they yield ``Progress`` and
``Preview`` events and return their result (``run_events`` turns them into plain calls).
One volume is the N = 1 case of fitting one model on several (``iter_fit_denoiser_many``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..mapped_pages import release_mapped_pages
from .config import INFERENCE_FIELDS, RUN_FIELDS, NMSGConfig, inference_settings
from .device import resolve_device, tile_batch_for
from .events import Event, EventStream, Progress
from .fill import detect_fill
from .model import NMSGModel, NoiseLearning
from .noise_amplitude import local_noise_amplitude
from .noise_learning import iter_learn_noise_from
from .noise_model import SpectralNoise
from .pair_noise import shrunk_pairs_noise
from .predictor import estimator, make_predictor, validated_estimator
from .previews import PreviewBudget, PreviewPosition, iter_previews
from .tiling import iter_predict_tiled
from .train import PairSampler, iter_train, mixed_pairs, noise_model_pairs, unet_for
from .unet import AveragedUNets, Denoiser, UNet3D
from .validation import QualityEstimate, RecorruptedValidation, held_out_rows
from .volume import (
    Normalisation,
    NormalisedVolume,
    canonical_view,
    fit_normalisation,
    validate_background,
    validate_volume,
)

# The network's Gaussian base, relative to the Gaussian best for its training input: the
# network restores detail more easily than it removes noise (4 Å crowded case: base σ 2.0
# 29.14 dB, 2.5 29.98; oracle Gaussian 28.78)
BASE_WIDENING = 1.25
# In-plane quarter turns give training twice the variety but swap the tilt axis with the
# axis across it, whose noise and missing wedge differ. Flips only against flips and turns
# (quality preset, seed 0, 128³ suite cases): +0.20 to +0.40 dB where the best Gaussian for
# the training input was 1.25-1.75 voxels (the 10 and 14 Å cases, gold beads; 7 Å crowded
# -0.02), -0.13 to -0.20 where it was 2 or wider (4 Å Poisson cases; detector MTF +0.04):
# where fine detail stands above the noise the network learns the wedge's in-plane
# anisotropy, where it does not the variety counts more (README Presets).
QUARTER_TURNS_FROM_SIGMA = 2.0


def quarter_turns_for(best_sigma: float) -> bool:
    """Whether a network whose training input is best filtered by a Gaussian of
    ``best_sigma`` voxels trains on in-plane quarter turns (``QUARTER_TURNS_FROM_SIGMA``)."""
    return best_sigma >= QUARTER_TURNS_FROM_SIGMA


def prepare_volume(
    volume: np.ndarray,
    config: NMSGConfig,
    normalisation: Normalisation | None = None,
    background: np.ndarray | None = None,
) -> NormalisedVolume:
    """Validate ``volume`` and give its normalised (by default by its own statistics),
    wedge-axis-first view, with its constant fill frame (if any) found and the regions the
    user marked as background (``background``: non-zero there, the volume's shape)."""
    validate_volume(volume)
    if config.wedge_axis is not None and config.wedge_axis >= volume.ndim:
        raise InputError(f"wedge_axis {config.wedge_axis} does not exist in a 3D volume")
    if background is not None:
        validate_background(background, volume.shape)
    fill = detect_fill(volume)
    if normalisation is None:
        normalisation = fit_normalisation(volume, config.wedge_axis, seed=config.seed, fill=fill)
    return NormalisedVolume(volume, normalisation, fill, background)


def iter_learn_noise(
    volume: np.ndarray, config: NMSGConfig, background: np.ndarray | None = None
) -> EventStream[NoiseLearning]:
    """Extract background noise patches (from ``background``'s non-zero voxels when given,
    else where the automatic search finds them) and fit the configured noise model."""
    source = prepare_volume(volume, config, background=background)
    return (yield from iter_learn_noise_from([source], config))


def iter_fit_denoiser(
    volume: np.ndarray,
    config: NMSGConfig,
    noise: NoiseLearning | None = None,
    preview_position: PreviewPosition | None = None,
) -> EventStream[NMSGModel]:
    """Learn the noise (unless given), then train the U-Net, yielding previews on the way.

    ``preview_position`` returns the index along axis 0 the user is looking at (or None);
    every ``config.preview_every`` steps the slab around it is predicted and yielded.
    """
    return (yield from _iter_fit([prepare_volume(volume, config)], config, noise, preview_position))


def iter_fit_denoiser_many(
    volumes: Sequence[np.ndarray],
    config: NMSGConfig,
    backgrounds: Sequence[np.ndarray | None] | None = None,
) -> EventStream[NMSGModel]:
    """Learn one noise model and one denoiser from all ``volumes`` (each ``(Z, Y, X)``).

    Every volume is normalised on its own, their noise patches are pooled (from the
    non-zero voxels of its mask in ``backgrounds`` where one is given, else where the
    automatic search finds them), each gets its own local noise-amplitude map and
    training crops come from a randomly chosen volume per step. Volumes may differ in
    shape; memory-mapped arrays stay on disk. The first volume's held-out rows validate the
    model, and its ``normalisation`` is recorded (informative only: ``iter_denoise``
    normalises every tomogram by its own statistics).
    """
    if not volumes:
        raise InputError("fitting on several tomograms needs at least one volume")
    masks = [None] * len(volumes) if backgrounds is None else list(backgrounds)
    if len(masks) != len(volumes):
        raise InputError(f"{len(masks)} background masks for {len(volumes)} volumes")
    sources = [prepare_volume(v, config, background=m) for v, m in zip(volumes, masks, strict=True)]
    return (yield from _iter_fit(sources, config))


def _iter_fit(
    sources: Sequence[NormalisedVolume],
    config: NMSGConfig,
    noise: NoiseLearning | None = None,
    preview_position: PreviewPosition | None = None,
) -> EventStream[NMSGModel]:
    if noise is None:
        noise = yield from iter_learn_noise_from(sources, config)
    device = resolve_device(config.device)
    first = sources[0]
    on_checkpoint = None
    if preview_position is not None:
        budget = PreviewBudget()

        def on_checkpoint(net: Denoiser):
            if not budget.due():
                return iter(())
            parts = (pairs_noise, config)
            return budget.spend(iter_previews(net, parts, first, device, preview_position))

    learned = [_amplitude(source, noise.noise_model, config, device) for source in sources]
    pairs_noise = _pairs_noise(noise, learned, config)
    amplitudes = (
        learned
        if pairs_noise is noise.noise_model
        else [_amplitude(source, pairs_noise, config, device) for source in sources]
    )
    held_out = [held_out_rows(_rows(s), config.multiple) for s in sources]
    # validated with the spectral model whichever model trains (see NoiseLearning)
    judge_amplitude = (
        learned[0]
        if noise.spectral_model is noise.noise_model
        else _amplitude(first, noise.spectral_model, config, device)
    )
    validation = RecorruptedValidation(
        first, noise.spectral_model, judge_amplitude, config.alpha, held_out[0],
        config.multiple, device, config.seed, noise.validation_model,
    )  # fmt: skip
    config = _resolve_auto(config, validation)
    pairs = mixed_pairs(
        [
            noise_model_pairs(s, pairs_noise, config, device, config.multiple, a, h)
            for s, a, h in zip(sources, amplitudes, held_out, strict=True)
        ]
    )
    net = yield from _iter_train_networks(
        pairs, config, device, on_checkpoint, lambda n: validation.loss(estimator(n, config))
    )
    config, net, quality = _judge(net, pairs_noise, config, validation, device)
    yield Progress("validate", 1, 1, {k: float(v) for k, v in quality.to_dict().items()})
    return NMSGModel(
        config=config,
        noise_model=pairs_noise.cpu(),
        denoiser=net.cpu(),
        normalisation=first.normalisation,
        fidelity=noise.fidelity,
        quality=quality,
    )


def _iter_train_networks(
    pairs: PairSampler,
    config: NMSGConfig,
    device: torch.device,
    on_checkpoint: Callable[[Denoiser], Iterable[Event]] | None,
    validate: Callable[[UNet3D], float],
) -> EventStream[Denoiser]:
    """``config.networks`` networks trained one after another from their own seeds (the
    first from ``config.seed``, so one network is trained as ``iter_train`` trains it),
    reported as one schedule of ``networks × train_steps`` steps. A preview shows the
    mean of the networks trained so far and the one in training, as the result would be."""
    done: list[UNet3D] = []
    total = config.networks * config.train_steps
    for index in range(config.networks):
        seed = config.seed if index == 0 else _network_seed(config.seed, index)
        shown = _with_trained(on_checkpoint, list(done))
        stream = iter_train(pairs, config.replace(seed=seed), device, shown, validate)
        while True:
            try:
                event = next(stream)
            except StopIteration as stop:
                done.append(stop.value)
                break
            if isinstance(event, Progress) and event.stage == "train" and config.networks > 1:
                step = index * config.train_steps + event.step
                event = Progress("train", step, total, {**event.metrics, "network": index + 1})
            yield event
    return done[0] if len(done) == 1 else AveragedUNets(done)


def _with_trained(
    on_checkpoint: Callable[[Denoiser], Iterable[Event]] | None, trained: list[UNet3D]
) -> Callable[[UNet3D], Iterable[Event]] | None:
    """``on_checkpoint`` given the mean of the ``trained`` networks and the one in training."""
    if on_checkpoint is None or not trained:
        return on_checkpoint
    return lambda net: on_checkpoint(AveragedUNets([*trained, net]))


def _network_seed(seed: int, index: int) -> int:
    """The training seed of the ``index``-th averaged network (from 1 on), apart from every
    run's own ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % 2**31)


def _resolve_auto(config: NMSGConfig, validation: RecorruptedValidation) -> NMSGConfig:
    """The base σ (a filter a little wider than the best one) and the quarter turns that
    "auto" leaves to the Gaussian best for the training input (the turns on the scale their
    threshold was chosen on: ``best_gaussian_recorrupted_with_fit``)."""
    if config.base_sigma is not None and config.quarter_turns is not None:
        return config
    if config.base_sigma is None:
        config = config.replace(base_sigma=BASE_WIDENING * validation.best_gaussian()[0])
    if config.quarter_turns is None:
        sigma = validation.best_gaussian_recorrupted_with_fit()
        config = config.replace(quarter_turns=quarter_turns_for(sigma))
    return config


def _rows(source: NormalisedVolume) -> int:
    """Rows of the tilt axis that hold data (inside any fill frame)."""
    rows = source.data_box[1]
    return rows.stop - rows.start


def _pairs_noise(
    noise: NoiseLearning, amplitudes: Sequence[np.ndarray | None], config: NMSGConfig
) -> SpectralNoise:
    """The noise the training and inference pairs add: the learned model, or where
    ``pair_noise_shrinkage`` asks for it and the patches held signal, the spectral model
    shrunk where the volume holds signal (``pair_noise``)."""
    model = noise.noise_model
    if not (config.pair_noise_shrinkage and noise.volume_power is not None):
        return model
    if config.pairing != "r2r" or model.kind != "spectral":  # the GAN has no spectrum to shrink
        return model
    levels = [float(np.mean(np.square(a))) for a in amplitudes if a is not None]
    level = float(np.mean(levels)) if levels else 1.0
    return shrunk_pairs_noise(model, noise.volume_power, level, config.alpha)


def _amplitude(
    source: NormalisedVolume, model: SpectralNoise, config: NMSGConfig, device: torch.device
) -> np.ndarray | None:
    if not config.local_amplitude:
        return None
    generator = torch.Generator(device=device).manual_seed(config.seed)
    return local_noise_amplitude(source, model.to(device), generator)


def _judge(
    net: Denoiser,
    pairs_noise: SpectralNoise,
    config: NMSGConfig,
    validation: RecorruptedValidation,
    device: torch.device,
) -> tuple[NMSGConfig, Denoiser, QualityEstimate]:
    """The trained network against the Gaussian best for the input, judged as inference
    applies it (to y itself, with the pairs' noise); the Gaussian replaces a worse one."""
    estimate = validated_estimator(net, pairs_noise, config, validation.shape, device)
    net_risk = validation.risk(estimate)
    gaussian_sigma, gaussian_risk = validation.best_gaussian_for_input()
    fell_back = config.gaussian_fallback and net_risk > gaussian_risk
    if fell_back:  # an untrained network with a Gaussian base is exactly that Gaussian;
        # r2r applies it without a correction (averaged ±z pairs of a linear filter cancel)
        config = config.replace(base_sigma=gaussian_sigma, pairing="r2r", networks=1)
        net = unet_for(config, config.base_sigma)
        estimate = estimator(net.to(device), config)
    result_risk = gaussian_risk if fell_back else net_risk
    quality = QualityEstimate(
        gain_over_gaussian_db=validation.gain_db(result_risk, gaussian_risk),
        gaussian_sigma=gaussian_sigma,
        loss=result_risk,
        gaussian_loss=gaussian_risk,
        over_smoothed=validation.over_smoothed(estimate),
        fell_back=fell_back,
        held_out=validation.held_out,
        implausible=validation.implausible(net_risk, gaussian_risk),
    )
    return config, net, quality


def iter_denoise(
    volume: np.ndarray,
    model: NMSGModel,
    out: np.ndarray | None = None,
    config: NMSGConfig | None = None,
    normalisation: Normalisation | None = None,
) -> EventStream[np.ndarray]:
    """Denoise the whole volume tile by tile into ``out`` (new array, or e.g. a memmap).

    ``config`` overrides the inference and machine settings (``INFERENCE_FIELDS``,
    ``RUN_FIELDS``); a CUDA out-of-memory error is retried with smaller batches, then
    smaller tiles. ``normalisation`` defaults to the volume's own intensity statistics;
    passing another volume's (e.g. the full tomogram's for one of its halves) keeps the
    intensities the network saw in training.
    """
    config = config or model.config
    inference = model.config.replace(
        **{name: getattr(config, name) for name in INFERENCE_FIELDS + RUN_FIELDS}
    )
    source = prepare_volume(volume, inference, normalisation)
    return (yield from _iter_denoise(source, model, inference, out))


def _iter_denoise(
    source: NormalisedVolume, model: NMSGModel, inference: NMSGConfig, out: np.ndarray | None
) -> EventStream[np.ndarray]:
    volume = source.raw
    model = dataclasses.replace(model, config=inference)  # the predictor reads it
    if out is None:
        out = np.empty(volume.shape, dtype=np.float32)
    if out.shape != volume.shape:
        raise InputError(f"output shape {out.shape} differs from the input's {volume.shape}")
    target = canonical_view(out, source.normalisation.wedge_axis)
    device = resolve_device(inference.device)

    def write(z: slice, values: np.ndarray) -> None:
        block = source.to_raw_scale(values)
        fill = source.fill_mask((z, slice(None), slice(None)))
        if fill is not None:  # the input's fill, bit for bit: it is no data to denoise
            block[fill] = np.asarray(source.canonical[z])[fill]
        target[z] = block  # one write: a zarr array's target[z] would be a copy
        release_mapped_pages(out)  # bounds RSS when streaming multi-GB memory maps

    tile, batch = inference.tile, tile_batch_for(device, inference.tile_batch)
    multiple = model.denoiser.multiple
    while True:
        try:
            yield from iter_predict_tiled(
                make_predictor(model, device),
                source,
                write,
                tile=tile,
                overlap=min(inference.overlap, tile // 2),
                batch=batch,
                multiple=multiple,
                device=device,
                release_input=lambda: release_mapped_pages(volume),
            )
            return out
        except torch.cuda.OutOfMemoryError:
            if batch == 1 and tile <= 2 * multiple:
                raise
        # out of the except block: its traceback holds the failed batch's tensors
        torch.cuda.empty_cache()
        if batch > 1:
            batch //= 2
        else:
            tile = max(2 * multiple, (tile // 2) // multiple * multiple)
        yield Progress("denoise", 0, 1, {"retry_tile": float(tile), "retry_batch": batch})


OutputFor = Callable[[NMSGModel], np.ndarray]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run made: the noise it learnt or was given (None when only a model was
    given), the model it fitted or was given, and the denoised volume."""

    noise: NoiseLearning | None
    model: NMSGModel
    output: np.ndarray


def iter_run(
    volume: np.ndarray,
    config: NMSGConfig,
    noise: NoiseLearning | None = None,
    model: NMSGModel | None = None,
    out: np.ndarray | OutputFor | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    preview_position: PreviewPosition | None = None,
    background: np.ndarray | None = None,
) -> EventStream[RunResult]:
    """Learn the noise, fit the denoiser and denoise ``volume`` into ``out``, skipping the
    steps whose result is given.

    Without a ``model``, ``config`` fits one (from ``noise`` when given). Inference then
    uses the model's own settings, changed only by the user's explicit ``overrides``
    (``inference_settings``), on ``config``'s machine (device, tile batch). ``out`` may be
    a function of the model, called once it is fitted: an output file can then be created
    only when there is something to write, and record how the model was made.
    ``background``: where the noise is to be learned (``iter_learn_noise``).
    """
    source = None
    if model is None:
        source = prepare_volume(volume, config, background=background)
        if noise is None:
            noise = yield from iter_learn_noise_from([source], config)
        model = yield from _iter_fit([source], config, noise, preview_position)
    machine = {name: getattr(config, name) for name in RUN_FIELDS}
    inference = inference_settings(model.config, {**(overrides or {}), **machine})
    if source is None or inference.wedge_axis != config.wedge_axis:
        source = prepare_volume(volume, inference)
    if callable(out):
        out = out(model)
    output = yield from _iter_denoise(source, model, inference, out)
    return RunResult(noise, model, output)
