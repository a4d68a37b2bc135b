"""Every tunable of the method in one dataclass, with the fast / balanced / quality presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

NoiseModelKind = Literal["gan", "spectral"]
Pairing = Literal["r2r", "paper", "noisier2noise"]


@dataclass(frozen=True)
class NMSGConfig:
    """Settings of one NMSG run. Units are voxels unless said otherwise."""

    seed: int = 0
    device: str = "auto"
    wedge_axis: int | None = None  # None: the axis with the smallest extent
    # noise patches
    patch_size: int = 16
    max_patches: int = 256
    # noise model
    noise_model: NoiseModelKind = "spectral"  # measured better than the GAN (README Presets)
    gan_steps: int = 50
    gan_batch: int = 16
    gan_width: int = 16
    # pairs
    pairing: Pairing = "r2r"
    alpha: float = 1.0
    local_amplitude: bool = True  # scale model noise to the local noise level
    # denoiser
    unet_depth: int = 2
    unet_width: int = 8
    space_to_depth: bool = False
    # the network corrects the input blurred by this Gaussian (voxels); 0 corrects the input
    # itself; None: the Gaussian the self-supervised validation finds best for the input
    base_sigma: float | None = None
    # return the best Gaussian when the validation finds the network worse than it
    gaussian_fallback: bool = True
    train_steps: int = 2400
    batch_size: int = 2
    crop: int = 32
    lr: float = 3e-3
    ema_decay: float = 0.99
    lambda_rec: float = 1.0
    lambda_grad: float = 0.0
    lambda_gui: float = 0.0
    guidance_sigma: float = 1.5
    sparsity_sigma: float = 3.0
    # inference
    # ±z recorrupted copies averaged at inference (two passes each): the network was
    # trained on y + αz, so the mean of f(y ± αz) estimates E[x | y]; 0 is one pass f(y)
    inference_pairs: int = 0
    # mixed-precision inference, float16 on CUDA / bfloat16 on CPU; None: where it is fast
    amp: bool | None = None
    tile: int = 64
    overlap: int = 16  # clamped to half a tile
    tile_batch: int = 2
    preview_every: int = 25
    preview_depth: int = 8

    def __post_init__(self) -> None:
        problems = []
        if self.alpha < 1.0:
            problems.append(
                f"alpha={self.alpha} < 1: with little added noise the network learns to pass "
                "its input through (DESIGN §3); use alpha >= 1"
            )
        if self.crop < self.multiple * 2 or self.crop % self.multiple:
            problems.append(
                f"crop={self.crop} must be a multiple of {self.multiple} and at least "
                f"{self.multiple * 2} for this U-Net (depth {self.unet_depth})"
            )
        if self.base_sigma is not None and not 0 <= self.base_sigma <= 8:
            problems.append(f"base_sigma={self.base_sigma} must be between 0 and 8 voxels")
        if self.overlap < 0:
            problems.append(f"overlap={self.overlap} must not be negative")
        if self.tile % self.multiple:
            problems.append(f"tile={self.tile} must be a multiple of {self.multiple}")
        if self.noise_model not in ("gan", "spectral"):
            problems.append(f"noise_model must be 'gan' or 'spectral', not {self.noise_model!r}")
        if self.pairing not in ("r2r", "paper", "noisier2noise"):
            problems.append(f"pairing must be r2r, paper or noisier2noise, not {self.pairing!r}")
        if self.wedge_axis not in (None, 0, 1, 2):
            problems.append(f"wedge_axis must be 0, 1, 2 or None, not {self.wedge_axis!r}")
        if self.inference_pairs < 0:
            problems.append(f"inference_pairs={self.inference_pairs} must not be negative")
        if self.pairing == "paper" and self.inference_pairs:
            problems.append(
                "the paper pairing is applied as f(y): set inference_pairs=0 (averaging "
                "f(y + z) over z would mostly return the noisy input)"
            )
        if self.pairing == "noisier2noise" and not self.inference_pairs:
            problems.append("noisier2noise averages recorrupted copies: inference_pairs >= 1")
        for name in ("train_steps", "patch_size", "max_patches", "batch_size", "tile"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def multiple(self) -> int:
        """What crop and tile sizes must be multiples of, for this U-Net."""
        return 2 ** (self.unet_depth + self.space_to_depth)

    @classmethod
    def preset(cls, name: str = "fast", **overrides: Any) -> NMSGConfig:
        """A named preset with optional field overrides (``None`` values are ignored).

        Every preset averages pairs at inference, which Noisier2Noise and a GAN-trained
        network need; the paper pairing, asked for without a pair count, gets its one
        pass f(y).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        values = {**PRESETS[name], **given}
        if values.get("pairing") == "paper" and "inference_pairs" not in given:
            values["inference_pairs"] = 0  # the only way the paper pairing is applied
        return cls(**values)

    def replace(self, **changes: Any) -> NMSGConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NMSGConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**values)


# Set from measurements (README "Presets"; 128³ at SNR 0.1 on 2 CPU cores): lr 3e-3 beat
# 1e-3 and 6e-3 by 0.6-0.8 dB at 800 steps; quality keeps rising with steps (+0.9 dB from
# 1200 to 3000), and a 32³-crop step costs half a 40³ one (same PSNR per minute), so the
# fast preset buys steps with small crops and the larger presets buy more steps on 40³
# crops. The spectral noise model beat the GAN in every side-by-side run (quality budget
# with 4 pairs: 30.82 vs 30.69 dB, 9.7 vs 13.9 min), so it is the default; the GAN stays
# selectable (gan_steps below apply when it is chosen). Averaging f(y ± z) over recorrupted
# pairs at inference helps the width-16 networks: quality (4 pairs) 30.14 -> 30.82 dB,
# balanced (2 pairs) 29.50 -> 30.22, for 2 network passes per pair. The fast preset is a
# width-8 U-Net trained twice as long in the same time: its single pass f(y) matched the
# width-16 fast net with one pair on two 128³ volumes at 3x the inference speed. Since the
# network corrects a Gaussian base, 2 pairs add 0.10 dB to its one pass on three 128³
# suite cases (4 Å crowded 29.95 -> 30.05, SNR 0.03 24.44 -> 24.54, thick gradient 26.11 ->
# 26.15) for 2.5 s more on 2 cores, so every preset averages pairs.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"inference_pairs": 2},
    "balanced": {
        "unet_width": 16, "train_steps": 2000, "gan_steps": 150, "crop": 40, "inference_pairs": 2,
    },
    "quality": {
        "unet_width": 16, "train_steps": 3000, "gan_steps": 300, "crop": 40, "inference_pairs": 4,
    },
}  # fmt: skip


# Inference settings a fitted model carries: they change its output, so a saved model is
# applied with its own unless the user sets them. The device and the tile batch are the
# machine's (a model fitted on a GPU may be applied on a laptop), not the model's.
INFERENCE_FIELDS = ("inference_pairs", "tile", "overlap", "amp", "wedge_axis")
RUN_FIELDS = ("device", "tile_batch")


def inference_settings(model: NMSGConfig, overrides: dict[str, Any] | None = None) -> NMSGConfig:
    """The config to denoise with: ``model``'s settings with the user's ``overrides``.

    ``overrides`` holds only what the user set explicitly (command-line flags, edited
    widget fields), so every key counts, ``None`` too (``amp=None``: auto). Training
    settings in it are ignored, as they cannot change a fitted model; the device and tile
    batch come from it or their defaults. As in ``NMSGConfig.preset``, a Noisier2Noise or
    GAN-trained network gets at least one averaged pair unless ``inference_pairs`` is
    given; the paper pairing stays at one pass f(y), the only way it is applied.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - {f.name for f in fields(NMSGConfig)}
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    values = {name: getattr(model, name) for name in INFERENCE_FIELDS}
    values |= {name: getattr(NMSGConfig, name) for name in RUN_FIELDS}
    values |= {k: v for k, v in overrides.items() if k in INFERENCE_FIELDS + RUN_FIELDS}
    needs_pairs = model.pairing == "noisier2noise" or (
        model.noise_model == "gan" and model.pairing != "paper"
    )
    if needs_pairs and "inference_pairs" not in overrides:
        values["inference_pairs"] = max(1, values["inference_pairs"])
    return model.replace(**values)
