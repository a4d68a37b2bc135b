"""The two runs the widget starts: what each needs, and the engine generator it runs.

The only module of the napari side that calls the engine's runs (``iter_learn_noise``,
``iter_run``). No Qt: the widget starts a :class:`Run` on its
run panel and, when it ends, reads what it needs back from ``context``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ._layers import volume_of
from ._output_layers import RunOutput
from ._session import mask_fingerprint
from ._task_worker import Stream
from .engine import NMSGConfig, iter_learn_noise, iter_run
from .errors import InputError

if TYPE_CHECKING:
    from napari.layers import Image, Labels

    from ._session import Session


@dataclass(frozen=True)
class Run:
    """A run ready to start: task name, generator, the line shown until its first step,
    and the context its end needs (``layer``, ``config``; for Denoise ``output``, ``reused``).
    """

    name: str
    stream: Stream
    text: str
    context: dict[str, Any]


def _where(background: Labels | None) -> str:
    return f" in {background.name!r}" if background is not None else ""


def plan_learn(layer: Image, config: NMSGConfig, background: Labels | None = None) -> Run:
    """*Learn noise* on ``layer`` (in the ``background`` the user painted, if any): yields
    ``Progress``, returns the ``NoiseLearning``."""
    mask = volume_of(background) if background is not None else None
    stream = partial(iter_learn_noise, volume_of(layer), config, mask)
    text = f"Learning the noise of {layer.name!r}{_where(background)}…"
    context = {"layer": layer, "config": config, "background": mask_fingerprint(mask)}
    return Run("learn", stream, text, context)


def plan_denoise(
    viewer: Any,
    session: Session,
    layer: Image,
    config: NMSGConfig,
    *,
    given: dict[str, Any],
    reuse: bool,
    preview_position: Callable[[], int | None],
    background: Labels | None = None,
) -> Run:
    """*Denoise* ``layer`` into a prepared output layer; the run returns a ``RunResult``.

    With ``reuse``, the session's model denoises without training (``InputError`` if there
    is none); else the denoiser is fitted, on the noise cached for this layer and settings
    or on noise learned first (in the painted ``background``, if any). ``given`` are the
    user's settings, which also override a reused model's inference settings.
    """
    model = session.model if reuse else None
    if reuse and model is None:
        raise InputError("no model to reuse; untick 'Reuse model' or load one first.")
    mask = volume_of(background) if background is not None and not reuse else None
    key = mask_fingerprint(mask)
    noise = None if reuse else session.cached_noise(layer.unique_id, volume_of(layer), config, key)
    output = RunOutput.prepare(viewer, session, layer)
    stream = partial(
        iter_run, volume_of(layer), config, noise, model, output.buffer,
        overrides=given, preview_position=preview_position, background=mask,
    )  # fmt: skip
    how = "with the current model" if reuse else f"fitting the denoiser{_where(background)}"
    context = {
        "layer": layer, "output": output, "config": config, "reused": reuse, "background": key,
    }  # fmt: skip
    return Run("denoise", stream, f"Denoising {layer.name!r} ({how})…", context)
