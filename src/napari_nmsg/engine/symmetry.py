"""In-plane flips and quarter turns: the symmetries of a tomogram's noise that training
augments with and inference averages over. Never across the wedge axis (axis -3), whose
resolution and noise differ from the in-plane axes."""

from __future__ import annotations

import torch


def inplane_symmetry(k: int, square: bool) -> tuple[tuple[int, ...], int]:
    """(flipped dims, quarter turns) of the k-th in-plane symmetry: the 8 of a square tile,
    the 4 flips of a rectangular one; never across the wedge axis (as in training)."""
    if square:
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
