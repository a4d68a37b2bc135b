"""PNG figures of the quality benchmark (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _cases import CURVE_METHODS
from _common import save_figure


def central_slices(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray]],
    title: str,
    limits: tuple[float, float],
    columns: int = 4,
) -> None:
    """For each (label, volume): the central XY slice above the central XZ slice.

    Volumes should be on the target's intensity scale (affine-fitted) so one grey scale
    (``limits``) serves all panels.
    """
    n = len(panels)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    shape = panels[0][1].shape
    xy_h, xz_h = shape[1], shape[0]
    fig = plt.figure(figsize=(3.0 * columns, 3.0 * rows * (xy_h + xz_h) / shape[2] + 0.6))
    grid = fig.add_gridspec(2 * rows, columns, height_ratios=[xy_h, xz_h] * rows)
    for i, (label, volume) in enumerate(panels):
        r, c = divmod(i, columns)
        z, y = volume.shape[0] // 2, volume.shape[1] // 2
        for j, (image, name) in enumerate(((volume[z], "XY"), (volume[:, y, :], "XZ"))):
            ax = fig.add_subplot(grid[2 * r + j, c])
            ax.imshow(image, cmap="gray", vmin=limits[0], vmax=limits[1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(label, fontsize=8)
            ax.set_ylabel(name, fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=110, rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))


def radial_profile(psd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power of an unshifted 3D spectrum: (cycles/voxel, mean power)."""
    grids = [np.fft.fftfreq(n) for n in psd.shape]
    radius = np.sqrt(sum(g**2 for g in np.meshgrid(*grids, indexing="ij", sparse=True)))
    n = min(psd.shape)
    shell = np.rint(radius * n).astype(int)
    keep = shell <= n // 2
    total = np.bincount(shell[keep], psd[keep], n // 2 + 1)
    count = np.bincount(shell[keep], None, n // 2 + 1)
    return np.arange(n // 2 + 1) / n, total / np.maximum(count, 1)


def noise_spectra(path: Path, spectra: dict[str, np.ndarray], title: str) -> None:
    """Radially averaged power and the central k_z–k_x section of each noise source.

    ``spectra`` maps a label to a mean power spectrum (unshifted, ``(Z, Y, X)``).
    """
    n = len(spectra)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.3))
    sections = {
        k: np.log10(np.fft.fftshift(v)[:, v.shape[1] // 2, :] + 1e-8) for k, v in spectra.items()
    }
    lo = min(float(np.percentile(s, 2)) for s in sections.values())
    hi = max(float(s.max()) for s in sections.values())
    for label, psd in spectra.items():
        f, p = radial_profile(psd)
        axes[0].semilogy(f[1:], p[1:], label=label)
    axes[0].set_xlabel("spatial frequency (cycles/voxel)")
    axes[0].set_ylabel("radially averaged power")
    axes[0].legend(fontsize=7)
    axes[0].set_title("radial average", fontsize=9)
    for ax, (label, section) in zip(axes[1:], sections.items(), strict=True):
        size = section.shape
        extent = (-0.5, 0.5 - 1 / size[1], 0.5 - 1 / size[0], -0.5)
        ax.imshow(section, cmap="magma", vmin=lo, vmax=hi, extent=extent)
        ax.set_title(f"{label}: log10 power, k_y=0", fontsize=8)
        ax.set_xlabel("k_x")
        ax.set_ylabel("k_z (beam axis)")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=110)


def psnr_vs_time(
    path: Path,
    curves: dict[str, list[dict[str, float]]],
    reference_lines: dict[str, float],
    title: str,
) -> None:
    """PSNR of intermediate checkpoints against cumulative training seconds."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        if points:
            ax.plot([p["train_s"] for p in points], [p["psnr"] for p in points], "o-", label=label)
    for i, (label, value) in enumerate(reference_lines.items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{len(curves) + i}", label=label)
    ax.set_xlabel("training time (s, this machine)")
    ax.set_ylabel("PSNR (dB, affine fit)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=110)


def fsc_curves(
    path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], voxel: float, title: str
) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = plt.get_cmap("tab20")
    for i, (label, (freq, curve)) in enumerate(curves.items()):
        style = "-" if i < 10 else "--"
        ax.plot(freq / voxel, curve, style, label=label, lw=1, color=colours(i % 20))
    for threshold in (0.5, 0.143):
        ax.axhline(threshold, ls=":", color="grey", lw=1)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC against the noiseless target")
    ax.set_ylim(-0.1, 1.02)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=110)


def case_figures(
    case: str,
    entry: dict[str, Any],
    outputs: dict[str, np.ndarray],
    target: np.ndarray,
    voxel: float,
    case_dir: Path,
    out: Path,
) -> None:
    """Every figure of one case into ``out``; their file names go to ``entry["figures"]``."""
    from napari_nmsg.metrics import affine_fit

    figures = entry.setdefault("figures", {})
    lo, hi = np.percentile(target, [0.5, 99.5])
    panels = [("ground truth (noiseless WBP)", target)]
    for name, volume in outputs.items():
        row = entry["methods"][name]
        panels.append((f"{name}\n{row['psnr']:.2f} dB", affine_fit(volume, target)))
    path = out / f"slices_{case}.png"
    central_slices(path, panels, f"{case}: central XY (top) and XZ (bottom) slices", (lo, hi))
    figures["slices"] = path.name

    spectra = {}
    for kind in entry["noise"]:
        npz = case_dir / f"noise-{kind}-spectra.npz"
        if npz.exists():
            with np.load(npz) as data:
                spectra.setdefault("true noise (noisy − target)", data["true"])
                spectra.setdefault("real patches (extracted)", data["extracted"])
                spectra[f"generated: {kind}"] = data["generated"]
    if spectra:
        path = out / f"noise_spectra_{case}.png"
        noise_spectra(path, spectra, f"{case}: noise power spectra (normalised units)")
        figures["noise_spectra"] = path.name

    curves = {
        name: entry["methods"][name].get("curve", [])
        for name in CURVE_METHODS
        if name in entry["methods"] and entry["methods"][name].get("curve")
    }
    if curves:
        lines = {
            name: entry["methods"][name]["psnr"]
            for name in ("noisy", "gaussian")
            if entry["methods"].get(name, {}).get("ok")
        }
        path = out / f"psnr_vs_time_{case}.png"
        psnr_vs_time(path, curves, lines, f"{case}: PSNR of EMA checkpoints vs training time")
        figures["psnr_vs_time"] = path.name

    fsc = {
        name: (np.array(row["fsc_curve"]["freq"]), np.array(row["fsc_curve"]["fsc"]))
        for name, row in entry["methods"].items()
        if row.get("ok") and "fsc_curve" in row
    }
    if fsc:
        path = out / f"fsc_{case}.png"
        fsc_curves(path, fsc, voxel, f"{case}: FSC against the noiseless target")
        figures["fsc"] = path.name
