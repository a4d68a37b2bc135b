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
from ._task_worker import Stream
from .engine import NMSGConfig, iter_learn_noise, iter_run
from .errors import InputError

if TYPE_CHECKING:
    from napari.layers import Image

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


def plan_learn(layer: Image, config: NMSGConfig) -> Run:
    """*Learn noise* on ``layer``: yields ``Progress``, returns the ``NoiseLearning``."""
    stream = partial(iter_learn_noise, volume_of(layer), config)
    text = f"Learning the noise of {layer.name!r}…"
    return Run("learn", stream, text, {"layer": layer, "config": config})


def plan_denoise(
    viewer: Any,
    session: Session,
    layer: Image,
    config: NMSGConfig,
    *,
    given: dict[str, Any],
    reuse: bool,
    preview_position: Callable[[], int | None],
) -> Run:
    """*Denoise* ``layer`` into a prepared output layer; the run returns a ``RunResult``.

    With ``reuse``, the session's model denoises without training (``InputError`` if there
    is none); else the denoiser is fitted, on the noise cached for this layer and settings
    or on noise learned first. ``given`` are the user's settings, which also override a
    reused model's inference settings.
    """
    model = session.model if reuse else None
    if reuse and model is None:
        raise InputError("no model to reuse; untick 'Reuse model' or load one first.")
    noise = None if reuse else session.cached_noise(layer.unique_id, volume_of(layer), config)
    output = RunOutput.prepare(viewer, session, layer)
    stream = partial(
        iter_run, volume_of(layer), config, noise, model, output.buffer,
        overrides=given, preview_position=preview_position,
    )  # fmt: skip
    how = "with the current model" if reuse else "fitting the denoiser"
    context = {"layer": layer, "output": output, "config": config, "reused": reuse}
    return Run("denoise", stream, f"Denoising {layer.name!r} ({how})…", context)
