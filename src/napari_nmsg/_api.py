"""The one-call public functions: each runs a whole step and returns its result."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .batch.resume import (
    file_digest,
    file_fingerprint,
    sidecar_path,
    sidecar_payload,
    stored_size,
    write_json_atomic,
)
from .engine import (
    NMSGConfig,
    NMSGModel,
    NoiseLearning,
    Preview,
    Progress,
    iter_fit_denoiser,
    iter_learn_noise,
    iter_run,
    run_events,
)
from .engine import save_model as _save_model
from .engine.config import inference_settings
from .engine.validation import QualityEstimate
from .errors import InputError
from .io import (
    MODEL_SUFFIXES,
    MRC_SUFFIXES,
    ZARR_SUFFIXES,
    Tomogram,
    check_output_path,
    mrc_output,
    read_volume,
)
from .provenance import ATTRS_KEY, build_provenance, mrc_labels
from .zarr_io import check_zarr_output, is_zarr, pyramid_shapes, zarr_output

EventCallback = Callable[[Progress | Preview], Any] | None


def _default() -> NMSGConfig:
    """What a call without a config runs: the default click (the fast preset)."""
    return NMSGConfig.preset("fast")


def learn_noise(
    volume: np.ndarray,
    config: NMSGConfig | None = None,
    on_event: EventCallback = None,
    background: np.ndarray | None = None,
) -> NoiseLearning:
    """Fit a noise model to the signal-free regions of ``volume`` (Z, Y, X): where
    ``background`` (same shape) is non-zero if given, else where they are found."""
    return run_events(iter_learn_noise(volume, config or _default(), background), on_event)


def fit_denoiser(
    volume: np.ndarray,
    config: NMSGConfig | None = None,
    noise: NoiseLearning | None = None,
    on_event: EventCallback = None,
) -> NMSGModel:
    """Learn the noise (unless ``noise`` is given) and fit the denoiser to ``volume``."""
    return run_events(iter_fit_denoiser(volume, config or _default(), noise), on_event)


def denoise(
    volume: np.ndarray,
    model: NMSGModel | None = None,
    config: NMSGConfig | None = None,
    on_event: EventCallback = None,
) -> np.ndarray:
    """Denoise ``volume``; without a ``model`` one is fitted to the volume itself first.

    ``config`` gives the fitting settings and the machine to run on; a given ``model``
    denoises with the inference settings it was fitted with.
    """
    return run_events(iter_run(volume, config or _default(), model=model), on_event).output


def read_background(path: str | os.PathLike | None, tomo: Tomogram) -> np.ndarray | None:
    """The background mask file for ``tomo`` (None without one), checked for its shape."""
    if path is None:
        return None
    mask = read_volume(path).data
    if tuple(mask.shape) != tuple(tomo.data.shape):
        raise InputError(
            f"the background mask {Path(path).name} has shape {tuple(mask.shape)}, the "
            f"tomogram {tuple(tomo.data.shape)}"
        )
    return mask


def denoise_file(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    config: NMSGConfig | None = None,
    model: NMSGModel | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    on_event: Callable[[Any], Any] | None = None,
    save_model: str | os.PathLike | None = None,
    level: int | str | None = None,
    levels: int = 1,
    voxel_size: float | None = None,
    input_record: dict[str, Any] | None = None,
    sidecar_fields: dict[str, Any] | None = None,
    background: str | os.PathLike | None = None,
) -> tuple[dict[str, float], QualityEstimate | None]:
    """Denoise one tomogram file into one MRC file or OME-Zarr store (``output`` ending in
    ``.zarr``); fit a model to it unless ``model``.

    ``config`` gives the fitting settings (without a ``model``) and the device and tile
    batch to run on. The inference settings are the model's, except those the user set
    explicitly, given as ``overrides`` (``engine.config.inference_settings``). ``level``
    picks an OME-Zarr input's level (a number, or a voxel size such as ``"8A"``);
    ``levels`` is the OME-Zarr output's number of pyramid levels. The output keeps the
    input's voxel size, or gets ``voxel_size`` (Å), and its origin, and appears atomically
    (never partial). Its provenance (``provenance.build_provenance``) goes into its MRC
    labels or zarr attributes and, with ``sidecar_fields``, into the sidecar
    ``<output>.nmsg.json`` written after it. ``input_record``: the input's fingerprint and
    ``blake2b`` if the caller has them (the batch does), else they are measured here.
    ``background``: a mask file of the input's shape, non-zero where the noise is to be
    learned (``iter_learn_noise``; without a ``model`` only). Returns the seconds spent
    reading, fitting and denoising, and the model's self-supervised quality estimate.
    """
    started = time.perf_counter()
    config = config or _default()
    zarr_out = is_zarr(output)
    output = check_output_path(output, (input_path,), suffixes=MRC_SUFFIXES + ZARR_SUFFIXES)
    if zarr_out:
        check_zarr_output(output, (input_path,))
    elif levels != 1:
        raise InputError(f"--levels {levels} needs an OME-Zarr (.zarr) output, not {output.name}")
    if voxel_size is not None and not voxel_size > 0:
        raise InputError(f"--voxel-size {voxel_size:g} must be positive")
    if save_model:
        check_output_path(save_model, protect=(input_path,), suffixes=MODEL_SUFFIXES)
    tomo = read_volume(input_path, level=level)
    mask = read_background(background, tomo) if model is None else None
    shape = tomo.data.shape
    if zarr_out:
        pyramid_shapes(shape, levels)  # too many levels: refused before any work
    record = dict(input_record or file_fingerprint(input_path))
    if not record.get("blake2b"):
        record["blake2b"] = file_digest(input_path)  # one streaming read of the input
    seconds = {"read": time.perf_counter() - started}
    given = model is not None
    written = (voxel_size,) * 3 if voxel_size is not None else tomo.voxel_size
    made: dict[str, Any] = {}

    with contextlib.ExitStack() as outputs:

        def output_for(fitted: NMSGModel) -> np.ndarray:
            seconds["fit"] = 0.0 if given else time.perf_counter() - started - seconds["read"]
            if save_model and not given:
                _save_model(fitted, save_model)
            made["provenance"] = build_provenance(
                fitted, inference_settings(fitted.config, overrides), input_path=input_path,
                input_blake2b=record["blake2b"], fitted_here=not given,
                input_voxel_size=tomo.voxel_size, voxel_size=written,
                voxel_size_given=voxel_size is not None,
                background=None if mask is None else Path(background).name,
                level=tomo.metadata.get("ome_zarr", {}).get("level"),
            )  # fmt: skip
            if zarr_out:
                attrs = {ATTRS_KEY: made["provenance"]}
                file = zarr_output(output, shape, written, tomo.origin, protect=(input_path,),
                                   levels=levels, attrs=attrs)  # fmt: skip
            else:
                file = mrc_output(output, shape, written, tomo.origin, protect=(input_path,),
                                  labels=mrc_labels(made["provenance"]))  # fmt: skip
            return outputs.enter_context(file)

        run = iter_run(
            tomo.data, config, model=model, out=output_for, overrides=overrides, background=mask
        )
        result = run_events(run, on_event)
    seconds["denoise"] = time.perf_counter() - started - seconds["read"] - seconds["fit"]
    provenance = made["provenance"]
    sidecar = sidecar_payload(
        input={"path": str(input_path), **record},
        output={"path": output.name, "size": stored_size(output)},
        **(sidecar_fields or {}),
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=seconds,
        quality_estimate=provenance["quality_estimate"],
        provenance=provenance,
    )
    write_json_atomic(sidecar_path(output), sidecar)
    return seconds, result.model.quality
