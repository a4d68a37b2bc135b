"""A residual 3D U-Net: the network predicts a correction that is added to its input."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv3d(c_out, c_out, 3, padding=1),
        nn.LeakyReLU(0.1),
    )


class UNet3D(nn.Module):
    """``depth`` poolings, ``width`` channels at full resolution, doubled at each level.

    Spatial sizes must be multiples of ``2**depth`` (``multiple``).
    """

    def __init__(self, depth: int = 2, width: int = 16):
        super().__init__()
        self.depth, self.width = depth, width
        channels = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(1 if i == 0 else channels[i - 1], channels[i]) for i in range(depth)]
        )
        self.bottom = _block(channels[depth - 1] if depth else 1, channels[depth])
        self.up = nn.ModuleList(
            [nn.ConvTranspose3d(channels[i + 1], channels[i], 2, stride=2) for i in range(depth)]
        )
        self.merge = nn.ModuleList([_block(2 * channels[i], channels[i]) for i in range(depth)])
        self.head = nn.Conv3d(channels[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.pool = nn.AvgPool3d(2)

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def init_args(self) -> dict[str, Any]:
        return {"depth": self.depth, "width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for i in reversed(range(self.depth)):
            h = self.merge[i](torch.cat([self.up[i](h), skips[i]], dim=1))
        return x + self.head(h)
