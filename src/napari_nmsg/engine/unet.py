"""A residual 3D U-Net: the network predicts a correction that is added to a Gaussian-filtered
copy of its input (or to the input itself when ``base_sigma`` is 0)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv3d(c_out, c_out, 3, padding=1),
        nn.LeakyReLU(0.1),
    )


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, 2Z, 2Y, 2X)`` → ``(B, 8C, Z, Y, X)``: each 2³ block becomes 8 channels."""
    b, c, nz, ny, nx = x.shape
    x = x.reshape(b, c, nz // 2, 2, ny // 2, 2, nx // 2, 2)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, 8 * c, nz // 2, ny // 2, nx // 2)


def depth_to_space(x: torch.Tensor) -> torch.Tensor:
    """The inverse of ``space_to_depth``."""
    b, c8, nz, ny, nx = x.shape
    x = x.reshape(b, c8 // 8, 2, 2, 2, nz, ny, nx).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c8 // 8, 2 * nz, 2 * ny, 2 * nx)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1D Gaussian taps out to 3σ."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    return taps / taps.sum()


def gaussian_blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 3D Gaussian of ``(B, 1, Z, Y, X)``, edges mirrored.

    Mirrored, not replicated: a replicated edge voxel counts up to ``radius`` times with its
    own noise, so the filter denoised the volume's last rows worst, where the validation
    scores it (σ 2 on the ``snr0.03`` suite case: 0.11 dB worse on the last 16 rows, 0.06
    over the whole volume). An axis no longer than the radius is replicated."""
    radius = (len(taps) - 1) // 2
    shapes = ((-1, 1, 1), (1, -1, 1), (1, 1, -1))
    for axis, shape in enumerate(shapes):
        pad = [0, 0] * 3
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        mode = "reflect" if x.shape[2 + axis] > radius else "replicate"
        x = F.conv3d(F.pad(x, pad, mode=mode), taps.reshape(1, 1, *shape).to(x))
    return x


class UNet3D(nn.Module):
    """``depth`` poolings, ``width`` channels at the top level, doubled at each level.

    With ``space_to_depth`` the network runs at half resolution on 2³ blocks folded into
    channels: 8× fewer positions per convolution, so far more training per CPU second;
    cryo-ET signal is band-limited well below Nyquist, so little is lost.
    Spatial sizes must be multiples of ``multiple``.

    With ``additive_skips`` a decoder level adds the upsampled features to the encoder's
    instead of concatenating them, so its first convolution reads half the channels: at
    width 8 that convolution is the costliest of the network.

    ``base_sigma`` > 0 adds the correction to the input blurred by that Gaussian instead of
    to the input itself: at cryo-ET SNR the best estimate is far closer to a smoothed input
    than to the input, so training starts from a good filter and only has to learn where to
    do better (a zero-initialised head makes the untrained network exactly that filter).
    """

    def __init__(
        self,
        depth: int = 2,
        width: int = 16,
        space_to_depth: bool = False,
        base_sigma: float = 0.0,
        additive_skips: bool = False,
    ):
        super().__init__()
        self.depth, self.width, self.fold = depth, width, space_to_depth
        self.additive_skips = additive_skips
        self.base_sigma = float(base_sigma)
        taps = gaussian_kernel(self.base_sigma) if self.base_sigma > 0 else torch.ones(1)
        self.register_buffer("base_taps", taps, persistent=False)
        io_channels = 8 if space_to_depth else 1
        channels = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(io_channels if i == 0 else channels[i - 1], channels[i]) for i in range(depth)]
        )
        self.bottom = _block(channels[depth - 1] if depth else io_channels, channels[depth])
        self.up = nn.ModuleList(
            [nn.ConvTranspose3d(channels[i + 1], channels[i], 2, stride=2) for i in range(depth)]
        )
        merged = 1 if additive_skips else 2  # channels into a merge: sum or concatenation
        self.merge = nn.ModuleList(
            [_block(merged * channels[i], channels[i]) for i in range(depth)]
        )
        self.head = nn.Conv3d(channels[0], io_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.pool = nn.AvgPool3d(2)

    @property
    def multiple(self) -> int:
        return 2 ** (self.depth + self.fold)

    def init_args(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "width": self.width,
            "space_to_depth": self.fold,
            "base_sigma": self.base_sigma,
            "additive_skips": self.additive_skips,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = space_to_depth(x) if self.fold else x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for i in reversed(range(self.depth)):
            up, skip = self.up[i](h), skips[i]
            h = self.merge[i](up + skip if self.additive_skips else torch.cat([up, skip], 1))
        residual = self.head(h)
        # the base in full precision under autocast (which inference uses on CPU and CUDA
        # only; torch < 2.5 knows no other device's): only the correction may be rounded
        autocasts = x.device.type in ("cpu", "cuda")
        with torch.autocast(x.device.type, enabled=False) if autocasts else nullcontext():
            base = gaussian_blur(x.float(), self.base_taps) if self.base_sigma > 0 else x
        return base + (depth_to_space(residual) if self.fold else residual)


class AveragedUNets(nn.Module):
    """U-Nets trained alike from different seeds, applied as the mean of their outputs.

    Self-supervised training leaves each network with its own error, which a second seed
    does not repeat: averaging two cancels part of it, and gained more than training one
    twice as long where both were measured (README Presets)."""

    def __init__(self, members: Sequence[UNet3D]):
        super().__init__()
        if not members:
            raise ValueError("averaging needs at least one network")
        self.members = nn.ModuleList(members)

    @property
    def multiple(self) -> int:
        return self.members[0].multiple

    def init_args(self) -> dict[str, Any]:
        return {**self.members[0].init_args(), "networks": len(self.members)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x)
        for member in self.members[1:]:
            out = out + member(x)
        return out / len(self.members)


Denoiser = UNet3D | AveragedUNets


def denoiser_from_args(args: dict[str, Any]) -> Denoiser:
    """The untrained denoiser that ``init_args`` described: one U-Net, or several averaged."""
    args = dict(args)
    networks = args.pop("networks", 1)
    if networks == 1:
        return UNet3D(**args)
    return AveragedUNets([UNet3D(**args) for _ in range(networks)])
