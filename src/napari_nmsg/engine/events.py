"""Small event objects that the engine's generators yield to their front ends.

The engine never prints or draws: it yields these and the caller (CLI, napari widget,
Dask task) decides what to do with them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long stage; ``metrics`` holds the latest losses/figures."""

    stage: str
    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    """A denoised sub-volume of the input (input intensity scale) and where it goes."""

    region: tuple[slice, slice, slice]
    array: np.ndarray


Event = Progress | Preview
EventStream = Generator[Event, None, T]


def run_events(stream: EventStream[T], on_event: Callable[[Event], Any] | None = None) -> T:
    """Exhaust an engine generator, passing each event to ``on_event``; return its result."""
    while True:
        try:
            event = next(stream)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
