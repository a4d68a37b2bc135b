"""The quality benchmark's simulated cases and its methods (the rows of its tables)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CASES: dict[str, dict[str, Any]] = {
    "tiny-48": {"shape": (48, 48, 48), "snr": 0.1},  # smoke tests of the harness only
    "quick-96": {"shape": (96, 96, 96), "snr": 0.1},
    "snr0.1": {"shape": (128, 128, 128), "snr": 0.1},
    "snr0.05": {"shape": (128, 128, 128), "snr": 0.05},
    "thick": {"shape": (128, 128, 128), "snr": 0.1, "slab_fraction": 0.7},
    "aniso": {"shape": (128, 128, 128), "snr": 0.1, "tilt_range": 45.0, "defocus_um": 5.0},
}
CASE_NOTES = {
    "tiny-48": "48³ smoke test of the harness (no tile borders inside)",
    "quick-96": "96³, projection SNR 0.1, ±60° / 3°, defocus 3 µm, slab 50 %",
    "snr0.1": "128³, projection SNR 0.1, ±60° / 3°, defocus 3 µm, slab 50 %",
    "snr0.05": "128³, projection SNR 0.05 (noisier), ±60° / 3°, defocus 3 µm",
    "thick": "128³, SNR 0.1, thicker specimen (slab 70 %: less empty ice for noise patches)",
    "aniso": "128³, SNR 0.1, ±45° tilts (bigger missing wedge), defocus 5 µm",
}
QUICK = {"cases": ["quick-96"], "steps": 300, "gan_steps": 20, "curve_points": 2}
FULL = {"cases": ["snr0.1", "snr0.05", "thick", "aniso"], "curve_points": 6}


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    kind: str  # input | classical | reference | nmsg | preset
    overrides: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None


PAPER_LOSS = {"lambda_grad": 0.1, "lambda_gui": 0.5}
METHODS = [
    Method("noisy", "noisy input", "input"),
    Method("gaussian", "Gaussian filter, oracle σ", "classical"),
    Method("tv", "total variation (Chambolle), oracle weight", "classical"),
    Method("n2n", "Noise2Noise on even/odd halves", "reference"),
    Method("supervised", "supervised on ground truth (ceiling: needs ground truth)", "reference"),
    Method("nmsg", "NMSG default", "nmsg"),
    Method("nmsg-spectral", "NMSG, spectral noise model", "nmsg", {"noise_model": "spectral"}),
    Method("nmsg-gan", "NMSG, GAN noise model", "nmsg", {"noise_model": "gan"}),
    Method(
        "nmsg-pairs-paper",
        "NMSG, paper pairs f(y+n)→y, f(y)",
        "nmsg",
        {"pairing": "paper", "inference_pairs": 0},
    ),
    Method(
        "nmsg-noisier2noise",
        "NMSG, Noisier2Noise pairs + correction",
        "nmsg",
        {"pairing": "noisier2noise"},
    ),
    Method("nmsg-grad", "NMSG + sparsity term (λ_grad 0.1)", "nmsg", {"lambda_grad": 0.1}),
    Method("nmsg-gui", "NMSG + guidance term (λ_gui 0.5)", "nmsg", {"lambda_gui": 0.5}),
    Method("nmsg-paper-loss", "NMSG + paper loss (1 / 0.1 / 0.5)", "nmsg", PAPER_LOSS),
    Method(
        "nmsg-paper",
        "NMSG as published (paper pairs + loss 1 / 0.1 / 0.5)",
        "nmsg",
        {"pairing": "paper", "inference_pairs": 0, **PAPER_LOSS},
    ),
    Method("preset-fast", "preset fast", "preset", preset="fast"),
    Method("preset-balanced", "preset balanced", "preset", preset="balanced"),
    Method("preset-quality", "preset quality", "preset", preset="quality"),
]
BY_NAME = {m.name: m for m in METHODS}
NETWORK_KINDS = ("nmsg", "preset", "reference")  # the rows that train with the run's budget
# Other inferences of a row's trained network, reported as rows of their own
VARIANT_LABELS = {
    "single-pass": "one pass f(y) instead of averaged ±z pairs",
    "halves": "inference ½(f(even) + f(odd)) at its training noise level",
}
CURVE_METHODS = ("nmsg", "n2n", "supervised")


def default_methods(preset: str, noise_model: str, full: bool) -> list[str]:
    names = []
    for m in METHODS:
        if m.kind == "preset" and (not full or m.preset == preset):
            continue  # presets: full mode only; the preset under test is the "nmsg" row
        if m.kind == "nmsg" and m.name != "nmsg" and m.overrides == {"noise_model": noise_model}:
            continue  # the same as the default row
        names.append(m.name)
    return names


def method_config(base: Any, method: Method, preset: str, sets: dict[str, Any]) -> Any:
    """The NMSGConfig of a network row: the run's ``base`` with the method's changes.

    A preset row keeps its own U-Net and crop and scales its step counts by the factor
    the run applies to the preset under test, so that every row gets a comparable budget.
    """
    from napari_nmsg.engine import NMSGConfig

    if method.kind != "preset":
        changes = dict(method.overrides)
        if changes.get("pairing") == "noisier2noise":  # its correction needs recorrupted copies
            changes.setdefault("inference_pairs", max(1, base.inference_pairs))
        return base.replace(**changes)
    reference = NMSGConfig.preset(preset)
    own = NMSGConfig.preset(method.preset)
    steps = max(1, round(own.train_steps * base.train_steps / reference.train_steps))
    gan = max(1, round(own.gan_steps * base.gan_steps / max(reference.gan_steps, 1)))
    return NMSGConfig.preset(
        method.preset,
        **{**sets, "device": base.device, "seed": base.seed},
        train_steps=steps,
        gan_steps=gan,
    )


def unet_description(config: Any) -> str:
    """How the reports name a U-Net (the run's budget and each network row's)."""
    return f"depth {config.unet_depth}, width {config.unet_width}" + (
        ", space-to-depth" if config.space_to_depth else ""
    )
