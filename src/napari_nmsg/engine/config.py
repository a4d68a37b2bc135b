"""Every tunable of the method, in typed groups, with the fast / balanced / quality presets.

Each group (noise, training, inference, ...) is a frozen dataclass whose fields declare how
front ends present them (``settings.option``); ``NMSGConfig`` is all groups in one flat
value, so a run is one object, a saved model one flat dict, and a function that needs only
one stage can take that stage's group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal

from ..errors import SettingsError
from .settings import Group, choice_values, declared, labelled, option

NoiseModelKind = Literal["gan", "spectral"]
Pairing = Literal["r2r", "paper", "noisier2noise"]
NOISE_MODELS = choice_values(NoiseModelKind)
PAIRINGS = choice_values(Pairing)
NOISE_MODEL_CHOICES, PAIRING_CHOICES = labelled(NOISE_MODELS), labelled(PAIRINGS)
WEDGE_AXES = {"auto (thinnest axis)": None, "0 (Z)": 0, "1 (Y)": 1, "2 (X)": 2}
PRECISIONS = {
    "auto (on where faster)": None,
    "off (float32)": False,
    "on (bfloat16 CPU / float16 CUDA)": True,
}
SEPARABLE_CAP_CHOICES = {
    "auto (where the patches hold signal)": None,
    "off": False,
    "on": True,
}
QUARTER_TURN_CHOICES = {"auto (where the best Gaussian is wide)": None, "off": False, "on": True}
_NO_FRONT_END = {"cli": False, "widget": False}  # method internals, set from Python


@dataclass(frozen=True)
class GeneralSettings:
    """What every stage shares."""

    GROUP: ClassVar[Group] = "general"

    seed: int = option(
        0,
        label="Seed",
        help="fixes every random source",
        minimum=0,
        maximum=2**31 - 1,
        widget=False,  # the widget's main form has it
    )


@dataclass(frozen=True)
class MachineSettings:
    """The computer's settings, not the model's: a model fitted on a GPU may be applied on
    a laptop."""

    GROUP: ClassVar[Group] = "machine"

    device: str = option(
        "auto",
        label="Device",
        help="auto, cuda, mps or cpu",
        widget=False,
    )
    tile_batch: int | None = option(
        None,
        label="Tiles per batch",
        help="tiles per network call (the output does not depend on it); auto: 8 on CUDA, "
        "2 elsewhere; a GPU that runs out of memory retries with fewer",
        auto="auto",
        minimum=1,
        maximum=256,
        widget=False,  # a machine setting for scripts and clusters
    )


@dataclass(frozen=True)
class NoiseSettings:
    """How the noise model is learnt from background patches."""

    GROUP: ClassVar[Group] = "noise"

    patch_size: int = option(
        16,
        label="Noise patch size",
        help="edge of the background noise patches",
        unit="voxels",
        minimum=8,
        maximum=64,
        **_NO_FRONT_END,
    )
    max_patches: int = option(
        256,
        label="Noise patches",
        help="most background patches used",
        minimum=8,
        maximum=100_000,
        **_NO_FRONT_END,
    )
    noise_model: NoiseModelKind = option(
        "spectral",  # measured better than the GAN (README Presets)
        label="Noise model",
        choices=NOISE_MODEL_CHOICES,
        help="gan: 3D WGAN-GP noise generator; spectral: coloured Gaussian baseline",
    )
    separable_cap: bool | None = option(
        None,  # auto: capped only where the patches clearly hold signal (README Case suite)
        label="Separable noise spectrum",
        auto="auto",
        choices=SEPARABLE_CAP_CHOICES,
        help="take the signal that background patches hold out of the noise spectrum, "
        "where it is not separable along the tilt axis (thick specimens, no clean ice); "
        "auto: where 64 or more patches hold over a tenth more power below 1/16 "
        "cycle/voxel than a separable spectrum would",
        widget=False,
    )
    gan_steps: int = option(
        50,
        label="GAN steps",
        help="generator steps of the noise GAN",
        minimum=1,
        maximum=1_000_000,
        step=25,
    )
    gan_batch: int = option(
        16,
        label="GAN batch",
        help="patches per GAN step",
        minimum=1,
        maximum=1024,
        **_NO_FRONT_END,
    )
    gan_width: int = option(
        16,
        label="GAN width",
        help="channels of the GAN's networks",
        minimum=2,
        maximum=256,
        **_NO_FRONT_END,
    )


@dataclass(frozen=True)
class TrainingSettings:
    """How the denoiser is trained: pairs, network, losses and schedule."""

    GROUP: ClassVar[Group] = "training"

    pairing: Pairing = option(
        "r2r",
        label="Pairs",
        choices=PAIRING_CHOICES,
        widget=False,
        help="r2r: y + αz → y − z/α; paper: y + z → y, applied as f(y); noisier2noise: "
        "y + z → y with its correction",
    )
    alpha: float = option(
        1.0,
        label="α",
        help="strength of the recorrupting noise (r2r); below 1 the network learns to pass "
        "its input through",
        minimum=1.0,
        maximum=10.0,
        **_NO_FRONT_END,
    )
    local_amplitude: bool = option(
        True,
        label="Local noise amplitude",
        help="scale model noise to the local noise level",
        **_NO_FRONT_END,
    )
    pair_noise_shrinkage: bool = option(
        True,  # fast preset, the 8 capped suite cases x 2 seeds: +0.06 dB mean (README Presets)
        label="Pair noise shrinkage",
        help="where the noise patches hold signal (capped spectrum), recorrupt the low band "
        "less where the volume holds signal, so R2R pairs train the Wiener filter of y",
        **_NO_FRONT_END,
    )
    unet_depth: int = option(
        2,
        label="Network depth",
        help="U-Net levels",
        flag="--depth",
        minimum=1,
        maximum=5,
        widget=False,
    )
    unet_width: int = option(
        8,
        label="Network width",
        help="U-Net channels at full resolution",
        flag="--width",
        minimum=2,
        maximum=256,
        step=4,
    )
    space_to_depth: bool = option(
        False,
        label="Space to depth",
        help="fold 2³ voxels into channels first",
        **_NO_FRONT_END,
    )
    additive_skips: bool = option(
        False,
        label="Additive skips",
        help="add the U-Net's skip connections instead of concatenating them",
        **_NO_FRONT_END,
    )
    quarter_turns: bool | None = option(
        None,  # auto: chosen from the best Gaussian (pipeline.quarter_turns_for)
        label="In-plane quarter turns",
        auto="auto",
        choices=QUARTER_TURN_CHOICES,
        help="also train on in-plane quarter turns (and average over them), which swap the "
        "tilt axis with the axis across it; auto: where the best Gaussian for the training "
        "input is 2 voxels or wider",
        widget=False,
    )
    base_sigma: float | None = option(
        None,
        label="Base Gaussian σ",
        unit="voxels",
        help="the Gaussian the network corrects; 0: the input itself",
        auto="chosen by the validation",
        minimum=0.0,
        maximum=8.0,
        step=0.25,
    )
    gaussian_fallback: bool = option(
        True,
        label="Gaussian fallback",
        help="return the best Gaussian filter when the validation finds the network worse",
    )
    train_steps: int = option(
        2400,
        label="Training steps",
        help="denoiser training steps",
        flag="--steps",
        minimum=1,
        maximum=1_000_000,
        step=50,
    )
    networks: int = option(
        1,
        label="Networks",
        help="networks trained alike from their own seeds and averaged; each costs its "
        "training steps and inference passes again",
        minimum=1,
        maximum=8,
    )
    batch_size: int = option(
        2,
        label="Batch",
        help="crops per training step",
        minimum=1,
        maximum=256,
        **_NO_FRONT_END,
    )
    crop: int = option(
        32,
        label="Crop size",
        unit="voxels",
        minimum=8,
        maximum=512,
        step=8,
        help="training crop edge; a multiple of 2^depth",
    )
    lr: float = option(
        3e-3,
        label="Learning rate",
        help="Adam's",
        minimum=1e-6,
        maximum=1.0,
        **_NO_FRONT_END,
    )
    # Over training seeds 0/1/2 on fixed data, 5 % raised the quality preset's mean by 0.07 dB
    # on the 4 Å crowded case (never below the same seed without) and seed 0 by 0.14 dB on
    # the Y-thick one, +0.03 and +0.06 on two held-out cases; the fast preset moved by
    # -0.01 to +0.03 dB on seven cases (results/lr-warmup-*).
    lr_warmup: float = option(
        0.05,
        label="Learning-rate warm-up",
        help="share of the steps over which the learning rate rises linearly to lr",
        minimum=0.0,
        maximum=0.5,
        **_NO_FRONT_END,
    )
    ema_decay: float = option(
        0.99,
        label="Weight average decay",
        help="EMA of the weights",
        minimum=0.0,
        maximum=1.0,
        **_NO_FRONT_END,
    )
    lambda_rec: float = option(
        1.0,
        label="λ reconstruction",
        help="weight of the pair loss",
        minimum=0.0,
        maximum=100.0,
        **_NO_FRONT_END,
    )
    lambda_grad: float = option(
        0.0,
        label="λ gradient",
        help="weight of the sparsity (gradient) term",
        minimum=0.0,
        maximum=100.0,
        step=0.05,
    )
    lambda_gui: float = option(
        0.0,
        label="λ guidance",
        help="weight of the smooth-guidance term",
        minimum=0.0,
        maximum=100.0,
        step=0.05,
    )
    guidance_sigma: float = option(
        1.5,
        label="Guidance σ",
        unit="voxels",
        help="Gaussian of the guidance term",
        minimum=0.0,
        maximum=8.0,
        **_NO_FRONT_END,
    )
    sparsity_sigma: float = option(
        3.0,
        label="Sparsity σ",
        unit="voxels",
        help="Gaussian of the sparsity term",
        minimum=0.0,
        maximum=8.0,
        **_NO_FRONT_END,
    )

    @property
    def turns(self) -> bool:
        """Whether training and inference use in-plane quarter turns: unless off. An auto
        that no validation resolved (pairs of aligned volumes, as benchmark references
        train; a model saved without this setting) keeps them."""
        return self.quarter_turns is not False

    @property
    def multiple(self) -> int:
        """What crop and tile sizes must be multiples of, for this U-Net."""
        return 2 ** (self.unet_depth + self.space_to_depth)


@dataclass(frozen=True)
class InferenceSettings:
    """How a fitted denoiser is applied; a saved model carries these, as they change its output."""

    GROUP: ClassVar[Group] = "inference"

    wedge_axis: int | None = option(
        None,
        label="Wedge (beam) axis",
        auto="auto",
        help="the missing-wedge / thickness axis; auto: the axis with the smallest extent",
        choices=WEDGE_AXES,
    )
    # the network was trained on y + αz, so the mean of f(y ± αz) estimates E[x | y]
    inference_pairs: int = option(
        0,
        label="Averaged ±noise pairs",
        minimum=0,
        maximum=64,
        help="pairs of ±noise recorrupted copies averaged at inference (2 passes each; "
        "0 = one pass f(y), about 9x faster than 4 pairs for 0.05-0.4 dB less)",
    )
    amp: bool | None = option(
        None,
        label="Mixed precision",
        auto="auto",
        choices=PRECISIONS,
        help="mixed-precision inference, bfloat16 on CPU and float16 on CUDA: about 2x "
        "faster, same PSNR in the benchmark; auto: on for CUDA and CPUs with AMX / AVX512-BF16",
    )
    tile: int = option(
        64,
        label="Tile size",
        unit="voxels",
        help="largest inference tile edge (tiles shrink where as many smaller ones cover an axis)",
        minimum=16,
        maximum=1024,
        step=16,
    )
    overlap: int = option(
        16,
        label="Tile overlap",
        unit="voxels",
        minimum=0,
        maximum=512,
        step=4,
        help="blended overlap between tiles (at most half a tile)",
    )


@dataclass(frozen=True)
class PreviewSettings:
    """The widget's live previews while training."""

    GROUP: ClassVar[Group] = "preview"

    preview_every: int = option(
        25,
        label="Preview every",
        unit="steps",
        cli=False,
        help="training steps between preview slabs",
        minimum=1,
        maximum=1_000_000,
        step=5,
    )
    preview_depth: int = option(
        8,
        label="Preview depth",
        unit="slices",
        help="slices per preview",
        minimum=1,
        maximum=256,
        **_NO_FRONT_END,
    )


@dataclass(frozen=True)
class NMSGConfig(
    PreviewSettings,
    InferenceSettings,
    TrainingSettings,
    NoiseSettings,
    MachineSettings,
    GeneralSettings,
):
    """Settings of one NMSG run, every group in one flat value. Units are voxels unless
    said otherwise; fields are in group order (general, machine, noise, training,
    inference, preview)."""

    def __post_init__(self) -> None:
        problems = [*_declared_range_problems(self), *self._combination_problems()]
        if problems:
            raise SettingsError(problems)

    def _combination_problems(self) -> list[tuple[str, str]]:
        """Settings valid alone that cannot run together."""
        problems = []
        multiple = self.multiple
        if self.crop < multiple * 2 or self.crop % multiple:
            problems.append(
                (
                    "crop",
                    f"{{name}}={self.crop} must be a multiple of {multiple} and at least "
                    f"{multiple * 2} for this U-Net (depth {self.unet_depth})",
                )
            )
        if self.tile % multiple:
            problems.append(("tile", f"{{name}}={self.tile} must be a multiple of {multiple}"))
        if self.pairing == "paper" and self.inference_pairs:
            problems.append(
                (
                    "inference_pairs",
                    "the paper pairing is applied as f(y): set {name} to 0 (averaging "
                    "f(y + z) over z would mostly return the noisy input)",
                )
            )
        if self.pairing == "noisier2noise" and not self.inference_pairs:
            problems.append(
                ("inference_pairs", "noisier2noise averages recorrupted copies: {name} >= 1")
            )
        return problems

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


# Set from measurements (README "Presets"; 128³ at SNR 0.1 on 2 CPU cores). The spectral
# noise model beat the GAN in every side-by-side run (quality budget with 4 pairs: 30.82 vs
# 30.69 dB, 9.7 vs 13.9 min), so it is the default; the GAN stays selectable (gan_steps
# below apply when it is chosen). Every preset trains the same network and differs only in
# steps, and quality trains two: a width-8 U-Net of two levels with additive skips on 32³
# crops at lr 1.5e-3. A width-8 net trained twice as long matched a width-16 one in the
# same time, and a 32³-crop step costs half a 40³ one. Additive skips: the same PSNR with a
# training step 20 % shorter (benchmarks/results/additive-skips). At lr 3e-3 one training
# seed in three or four landed about a dB low with two levels (7 Å crowded seed 2: 25.47
# dB, against 26.53 at 1.5e-3); at 1.5e-3 two levels beat one by 0.29-0.34 dB on average
# over seeds 0/1/2 on both tuning cases with spreads of 0.05-0.06 dB
# (benchmarks/results/lr-depth2, fast-depth2). Trained 4000 steps, that net beat the former
# quality preset (width 16, 40³ crops, lr 3e-3, 3000 steps) on both tuning cases in a third
# of its time: means over seeds 30.22 vs 30.14 dB (4 Å) and 26.60 vs 26.49 (7 Å), spreads
# 0.03-0.05 against 0.16; 6000 steps added 0.01-0.04 dB for 50 % more time
# (benchmarks/results/quality-recipe). Fast stops at 1600 steps (0.06-0.10 dB for 27 % less
# time, toward the 3 minutes on CPUs without AVX-512). Averaged ±z pairs at inference: on
# the 12 suite cases whose network was kept, 4 pairs beat 2 on every one (+0.01 to +0.12
# dB) and 2 beat one pass (+0.03 to +0.27), for about 5 s more on 128³ and 2 cores
# (benchmarks/results/pair-count). Quality averages two such networks trained from their
# own seeds: on the Y-thick case (seed 0) 29.21 dB in 413 s, where one network gave 29.08
# in 196 s and one trained 8000 steps 29.17 in 396 s (benchmarks/results/two-networks).
_NETWORK = {"lr": 1.5e-3, "additive_skips": True, "inference_pairs": 4}
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**_NETWORK, "train_steps": 1600},
    "balanced": {**_NETWORK, "train_steps": 2800, "gan_steps": 150},
    "quality": {**_NETWORK, "train_steps": 4000, "networks": 2, "gan_steps": 300},
}


SETTINGS = declared(NMSGConfig)
DECLARED = {d.name: d for d in SETTINGS}


def _declared_range_problems(config: NMSGConfig) -> list[tuple[str, str]]:
    """Values outside their declared range or choices (``None`` is "auto" where allowed)."""
    problems = []
    for d in SETTINGS:
        value, setting = getattr(config, d.name), d.setting
        if value is None and d.optional:
            continue
        if setting.choices is not None:
            if value not in setting.choices.values():
                allowed = ", ".join(str(v) for v in setting.choices.values())
                problems.append((d.name, f"{{name}} must be one of {allowed}, not {value!r}"))
        elif setting.minimum is not None and value < setting.minimum:
            problems.append((d.name, f"{{name}}={value} must be at least {setting.minimum:g}"))
        elif setting.maximum is not None and value > setting.maximum:
            problems.append((d.name, f"{{name}}={value} must be at most {setting.maximum:g}"))
    return problems


# Inference settings a fitted model carries: they change its output, so a saved model is
# applied with its own unless the user sets them. The machine's (device, tile batch) are
# not the model's.
INFERENCE_FIELDS = tuple(f.name for f in fields(InferenceSettings))
RUN_FIELDS = tuple(f.name for f in fields(MachineSettings))


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
