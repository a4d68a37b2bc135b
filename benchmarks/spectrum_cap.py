"""The spectral model's power per frequency shell against the TRUE noise's, with and
without the cap that takes the background patches' signal out (``cap_signal_in_spectrum``),
and the true noise's at the places the background search chose (its selection bias).

Per case: the fast preset's automatic patches, the true noise (noisy − target) at their
places, and as many true-noise patches at random places in the data, all through the same
unbiased-autocorrelation estimate.
No training; about 10 s per case. Writes ``spectrum_cap.{json,md,png}`` to ``--out``::

    python benchmarks/spectrum_cap.py --out benchmarks/results/spectrum-cap
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    command_line,
    log,
    machine_info,
    machine_markdown,
    mean_free_boxes,
    save_figure,
    true_noise_field,
    true_noise_patches,
    write_report,
)
from _suite_cases import CASES, simulate_case
from _table import Column, render_table

SHELLS = ((0.0, 0.04), (0.04, 0.08), (0.08, 0.12), (0.12, 0.17), (0.17, 0.25), (0.25, 0.35))


def shell_ratios(spectrum: np.ndarray, truth: np.ndarray) -> list[float]:
    """Power of ``spectrum`` over ``truth``'s in each |k| shell (cycles/voxel)."""
    from napari_nmsg.engine.noise_model import frequency_radius

    radius = frequency_radius(spectrum.shape[0])
    shells = [(radius > lo) & (radius <= hi) for lo, hi in SHELLS]
    return [float(spectrum[s].sum() / truth[s].sum()) for s in shells]


def run_case(name: str, seed: int) -> dict[str, Any]:
    from napari_nmsg.engine import NMSGConfig
    from napari_nmsg.engine.noise_model import (
        autocorrelation_power_spectrum,
        cap_signal_in_spectrum,
    )
    from napari_nmsg.engine.noise_patches import extract_noise_patches
    from napari_nmsg.engine.pipeline import prepare_volume

    data = simulate_case(name, seed)
    config = NMSGConfig.preset("fast", seed=seed)
    volume = prepare_volume(data["noisy"], config)
    found = extract_noise_patches(volume, config.patch_size, config.max_patches)
    rng = np.random.default_rng(seed + 1)
    truth_patches = true_noise_patches(
        data, volume.normalisation, found.patch_size, len(found.patches), rng
    )
    measured = autocorrelation_power_spectrum(found.patches)
    truth = autocorrelation_power_spectrum(truth_patches)
    noise, _ = true_noise_field(data, volume.normalisation)
    there = mean_free_boxes(noise, found.corners, found.patch_size)
    found_cap = cap_signal_in_spectrum(measured)
    capped, tilt_axis, (low_band_excess, upper_band_excess) = found_cap
    return {
        "role": CASES[name]["role"],
        "note": CASES[name]["note"],
        "patches": len(found.patches),
        "tilt_axis": tilt_axis,
        "signal_share": float(1 - capped.sum() / measured.sum()),
        "low_band_excess": low_band_excess,
        "upper_band_excess": upper_band_excess,
        "auto_cap": found_cap.holds_signal,
        "chosen": shell_ratios(autocorrelation_power_spectrum(there), truth),
        "measured": shell_ratios(measured, truth),
        "capped": shell_ratios(capped, truth),
    }


def _ratios(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def render(report: dict[str, Any]) -> str:
    rows = [{"case": name, **row} for name, row in report["cases"].items()]
    shells = " / ".join(f"{lo:g}–{hi:g}" for lo, hi in SHELLS)
    columns = [
        Column("case", lambda r: r["case"]),
        Column("role", lambda r: r["role"]),
        Column("patches", lambda r: r["patches"]),
        Column("tilt axis found", lambda r: r["tilt_axis"]),
        Column("share capped", lambda r: r["signal_share"], ".1%"),
        Column("excess over the separable fit, 0–1/16", lambda r: r["low_band_excess"], "+.2f"),
        Column("1/16–1/6", lambda r: r["upper_band_excess"], "+.2f"),
        Column("auto cap", lambda r: "yes" if r["auto_cap"] else "no"),
        Column("true noise at the chosen places / anywhere", lambda r: _ratios(r["chosen"])),
        Column("patches' spectrum / true", lambda r: _ratios(r["measured"])),
        Column("capped / true", lambda r: _ratios(r["capped"])),
    ]
    return (
        "# The noise spectrum's separable cap against the true noise\n\n"
        + machine_markdown(report["machine"])
        + f"\n\nCommand: `{report['command']}` (seed {report['seed']})\n\n"
        f"Power over the true noise's per |k| shell, cycles/voxel: {shells}. Canonical "
        "axes (thickness first); the simulator's tilt axis is canonical axis 1. The capped "
        "spectrum is what the spectral model samples where it is capped (`--separable-cap`, "
        "or automatically where the patches hold over 10 % more power than the separable "
        "fit at 0 < |k| <= 1/16 or at 1/16 < |k| <= 1/6: `auto cap`; the excess in both "
        "bands is given).\n\n" + render_table(rows, columns)
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(lo + hi) / 2 for lo, hi in SHELLS]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    panels = (("chosen", "true noise where chosen"), ("measured", "patches"), ("capped", "capped"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, row in report["cases"].items():
            ax.plot(centres, row[key], marker="o", label=name)
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.set_xlabel("|k| (cycles/voxel)")
        ax.set_title(f"{title}: power / true noise's")
    axes[0].set_ylabel("ratio")
    axes[0].set_ylim(0.3, 2.0)
    axes[-1].legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "seed": args.seed,
        "command": command_line(__file__, argv),
        "cases": {},
    }
    for name in args.cases.split(","):
        report["cases"][name] = run_case(name, args.seed)
        log(f"[{name}] capped / true {_ratios(report['cases'][name]['capped'])}")
    write_report(args.out, "spectrum_cap", report, render, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
