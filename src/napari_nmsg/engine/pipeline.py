"""The three long steps as event generators: learn the noise, fit the denoiser, denoise.

Front ends (CLI, napari widget, Dask tasks) drive these; they yield ``Progress`` and
``Preview`` events and return their result (``run_events`` turns them into plain calls).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError
from .config import INFERENCE_FIELDS, RUN_FIELDS, NMSGConfig
from .device import conv_memory_format, inference_dtype, resolve_device
from .events import Event, EventStream, Preview, Progress
from .fill import detect_fill
from .mapped_pages import release_mapped_pages
from .model import NMSGModel, NoiseLearning
from .noise_amplitude import local_noise_amplitude
from .noise_model import (
    SpectralNoise,
    iter_fit_gan,
    noise_fidelity,
    sample_patches,
    spectral_kernel,
)
from .noise_patches import extract_noise_patches
from .pairs import average_over_pairs, noisier2noise_estimate
from .tiling import Predictor, Window, iter_predict_tiled
from .train import iter_train, noise_model_pairs
from .unet import UNet3D
from .validation import QualityEstimate, RecorruptedValidation, held_out_rows
from .volume import (
    Normalisation,
    NormalisedVolume,
    canonical_view,
    fit_normalisation,
    validate_volume,
)

PreviewPosition = Callable[[], int | None]
# The network's Gaussian base, relative to the Gaussian best for its training input: the
# network restores detail more easily than it removes noise (4 Å crowded case: base σ 2.0
# 29.14 dB, 2.5 29.98; oracle Gaussian 28.78)
BASE_WIDENING = 1.25


def prepare_volume(
    volume: np.ndarray, config: NMSGConfig, normalisation: Normalisation | None = None
) -> NormalisedVolume:
    """Validate ``volume`` and give its normalised (by default by its own statistics),
    wedge-axis-first view, with its constant fill frame (if any) found."""
    validate_volume(volume)
    if config.wedge_axis is not None and config.wedge_axis >= volume.ndim:
        raise InputError(f"wedge_axis {config.wedge_axis} does not exist in a 3D volume")
    fill = detect_fill(volume)
    if normalisation is None:
        normalisation = fit_normalisation(volume, config.wedge_axis, seed=config.seed, fill=fill)
    return NormalisedVolume(volume, normalisation, fill)


def iter_learn_noise(volume: np.ndarray, config: NMSGConfig) -> EventStream[NoiseLearning]:
    """Extract background noise patches and fit the configured noise model to them."""
    return (yield from _iter_learn_noise(prepare_volume(volume, config), config))


def _iter_learn_noise(source: NormalisedVolume, config: NMSGConfig) -> EventStream[NoiseLearning]:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    yield Progress("noise-patches", 0, 1)
    patches = extract_noise_patches(source, config.patch_size, config.max_patches)
    yield Progress("noise-patches", 1, 1, {"patches": float(len(patches.patches))})
    train, held_out = patches.split(0.25, rng)
    size = patches.patch_size
    spectral = SpectralNoise(torch.from_numpy(spectral_kernel(train))).to(device)
    fidelity = {
        "spectral": noise_fidelity(
            sample_patches(spectral, len(held_out) * 4, size, generator), held_out
        )
    }
    model: SpectralNoise = spectral
    if config.noise_model == "gan":
        model, fidelity["gan"] = yield from iter_fit_gan(train, held_out, config, device, generator)
    model.eval()
    return NoiseLearning(
        noise_model=model,
        normalisation=source.normalisation,
        patches=patches,
        fidelity=fidelity,
        real_examples=held_out,
        generated_examples=sample_patches(model, len(held_out), size, generator),
    )


def _estimator(
    network: Callable[[torch.Tensor], torch.Tensor], config: NMSGConfig
) -> Callable[[torch.Tensor], torch.Tensor]:
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
    net = model.denoiser.to(device, memory_format=conv_memory_format(device)).eval()
    noise = model.noise_model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(model.config.seed)
    config = model.config
    amp_dtype = inference_dtype(device, config.amp)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return net(x).float()

    run = _estimator(forward, config)

    @torch.inference_mode()
    def predict(batch: torch.Tensor) -> torch.Tensor:
        if not config.inference_pairs:
            return run(batch)
        draws = _pair_draws(noise, config, batch.shape[0], tuple(batch.shape[-3:]), generator)
        return average_over_pairs(run, batch, draws)

    return predict


def _pair_draws(
    noise: SpectralNoise,
    config: NMSGConfig,
    batch: int,
    shape: tuple[int, ...],
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """The noise of ``config.inference_pairs`` pairs, as strong as the training pairs add it."""
    scale = config.alpha if config.pairing == "r2r" else 1.0
    return [scale * noise.sample(batch, shape, generator) for _ in range(config.inference_pairs)]


def _validated_estimator(
    net: UNet3D,
    noise: SpectralNoise,
    config: NMSGConfig,
    shape: tuple[int, ...],
    device: torch.device,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """What inference returns for one ``shape`` window, as a deterministic function (fixed
    pair draws), so that its risk can be estimated by finite differences."""
    run = _estimator(net.to(device).eval(), config)
    if not config.inference_pairs:
        return run
    generator = torch.Generator(device=device).manual_seed(config.seed + 104729)
    with torch.no_grad():
        draws = _pair_draws(noise.to(device), config, 1, shape, generator)
    return lambda x: average_over_pairs(run, x, draws)


def _slab_region(
    position: int, source: NormalisedVolume, config: NMSGConfig, multiple: int
) -> tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]:
    """(original-axes region shown, canonical window read with context, crop inside it)."""
    shape_original = source.raw.shape
    half = config.preview_depth // 2
    centre = int(np.clip(position, 0, shape_original[0] - 1))
    lo, hi = max(0, centre - half), min(shape_original[0], centre + half)
    shown = (slice(lo, hi), slice(0, shape_original[1]), slice(0, shape_original[2]))
    axis = source.normalisation.wedge_axis
    order = [axis] + [a for a in range(3) if a != axis]
    canonical = tuple(shown[a] for a in order)
    context = 2 * multiple
    window = tuple(
        slice(max(0, r.start - context), min(n, r.stop + context))
        for r, n in zip(canonical, source.shape, strict=True)
    )
    inner = tuple(
        slice(r.start - w.start, r.stop - w.start) for r, w in zip(canonical, window, strict=True)
    )
    return shown, window, inner


def _iter_previews(
    net: UNet3D,
    model_parts: tuple[SpectralNoise, NMSGConfig],
    source: NormalisedVolume,
    device: torch.device,
    where: PreviewPosition,
) -> Iterator[Event]:
    position = where()
    if position is None:
        return
    noise, config = model_parts
    shown, window, inner = _slab_region(position, source, config, net.multiple)
    preview_model = NMSGModel(config, noise, net, source.normalisation)
    block = np.zeros(tuple(w.stop - w.start for w in window), dtype=np.float32)

    def write(z: slice, values: np.ndarray) -> None:
        block[z] = values

    for _ in iter_predict_tiled(
        make_predictor(preview_model, device),
        Window(source, window),
        write,
        tile=config.tile,
        overlap=config.overlap,
        batch=config.tile_batch,
        multiple=net.multiple,
        device=device,
    ):
        pass
    canonical = source.to_raw_scale(block[inner])
    yield Preview(shown, np.moveaxis(canonical, 0, source.normalisation.wedge_axis))


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
    source = prepare_volume(volume, config)  # validated once, not again for the noise
    if noise is None:
        noise = yield from _iter_learn_noise(source, config)
    device = resolve_device(config.device)
    on_checkpoint = None
    if preview_position is not None:

        def on_checkpoint(net: UNet3D) -> Iterator[Event]:
            return _iter_previews(
                net, (noise.noise_model, config), source, device, preview_position
            )

    amplitude = None
    if config.local_amplitude:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        amplitude = local_noise_amplitude(source, noise.noise_model.to(device), generator)
    box_rows = source.data_box[1]
    held_out = held_out_rows(box_rows.stop - box_rows.start, config.multiple)
    validation = RecorruptedValidation(
        source, noise.noise_model, amplitude, config.alpha, held_out, config.multiple,
        device, config.seed,
    )  # fmt: skip
    if config.base_sigma is None:  # start from a filter a little wider than the best one
        config = config.replace(base_sigma=BASE_WIDENING * validation.best_gaussian()[0])
    pairs = noise_model_pairs(
        source, noise.noise_model, config, device, config.multiple, amplitude, held_out
    )
    net = yield from iter_train(
        pairs, config, device, on_checkpoint, lambda n: validation.loss(_estimator(n, config))
    )
    # judged as inference will apply it: to y itself, with the model's pairs
    estimate = _validated_estimator(net, noise.noise_model, config, validation.shape, device)
    net_risk = validation.risk(estimate)
    gaussian_sigma, gaussian_risk = validation.best_gaussian_for_input()
    fell_back = config.gaussian_fallback and net_risk > gaussian_risk
    if fell_back:  # an untrained network with a Gaussian base is exactly that Gaussian;
        # r2r applies it without a correction (averaged ±z pairs of a linear filter cancel)
        config = config.replace(base_sigma=gaussian_sigma, pairing="r2r")
        net = UNet3D(config.unet_depth, config.unet_width, config.space_to_depth, config.base_sigma)
        estimate = _estimator(net.to(device), config)
    result_risk = gaussian_risk if fell_back else net_risk
    quality = QualityEstimate(
        gain_over_gaussian_db=validation.gain_db(result_risk, gaussian_risk),
        gaussian_sigma=gaussian_sigma,
        loss=result_risk,
        gaussian_loss=gaussian_risk,
        over_smoothed=validation.over_smoothed(estimate),
        fell_back=fell_back,
        held_out=validation.held_out,
    )
    yield Progress("validate", 1, 1, {k: float(v) for k, v in quality.to_dict().items()})
    return NMSGModel(
        config=config,
        noise_model=noise.noise_model.cpu(),
        denoiser=net.cpu(),
        normalisation=source.normalisation,
        fidelity=noise.fidelity,
        quality=quality,
    )


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
    model = dataclasses.replace(model, config=inference)  # the predictor reads it
    source = prepare_volume(volume, inference, normalisation)
    if out is None:
        out = np.empty(volume.shape, dtype=np.float32)
    if out.shape != volume.shape:
        raise InputError(f"output shape {out.shape} differs from the input's {volume.shape}")
    target = canonical_view(out, source.normalisation.wedge_axis)
    device = resolve_device(inference.device)

    def write(z: slice, values: np.ndarray) -> None:
        target[z] = source.to_raw_scale(values)
        fill = source.fill_mask((z, slice(None), slice(None)))
        if fill is not None:  # the input's fill, bit for bit: it is no data to denoise
            target[z][fill] = source.canonical[z][fill]
        release_mapped_pages(out)  # bounds RSS when streaming multi-GB memory maps

    tile, batch = inference.tile, inference.tile_batch
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
            torch.cuda.empty_cache()
            if batch > 1:
                batch //= 2
            elif tile > 2 * multiple:
                tile = max(2 * multiple, (tile // 2) // multiple * multiple)
            else:
                raise
            yield Progress("denoise", 0, 1, {"retry_tile": float(tile), "retry_batch": batch})
