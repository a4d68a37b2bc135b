"""In-plane flips and quarter turns that training augments with and inference averages
over. Never across the wedge axis (axis -3), whose resolution and noise differ from the
in-plane axes. Flips are symmetries of a tomogram's noise and missing wedge; quarter turns
swap the tilt axis with the axis across it, so they are not, and are used only where the
extra variety pays (``TrainingSettings.quarter_turns``)."""

from __future__ import annotations

import torch


def inplane_symmetry(k: int, turns: bool) -> tuple[tuple[int, ...], int]:
    """(flipped dims, quarter turns) of the k-th in-plane symmetry: the 8 flips and turns
    with ``turns`` (a square tile only), else the 4 flips; never across the wedge axis."""
    if turns:
        return ((-1,) if k % 2 else ()), (k // 2) % 4
    return ((), (-1,), (-2,), (-2, -1))[k % 4], 0


def apply_symmetry(x: torch.Tensor, flips: tuple[int, ...], turns: int) -> torch.Tensor:
    """Flip, then turn by quarter turns in the (-2, -1) plane."""
    x = x.flip(flips) if flips else x
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def undo_symmetry(x: torch.Tensor, flips: tuple[int, ...], turns: int) -> torch.Tensor:
    """The inverse of ``apply_symmetry`` with the same arguments."""
    x = torch.rot90(x, -turns, dims=(-2, -1)) if turns else x
    return x.flip(flips) if flips else x
