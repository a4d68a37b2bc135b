"""Each noise model against the TRUE noise of every suite case (the simulator knows it).

Per case, the fast preset's noise learning runs once with the spectral model and once with
the GAN, on the same patches; both models' samples are compared with patches of the true
noise (noisy − target) cut at random places (not in any fill frame), and the extracted
patches too, which shows how much signal the automatic search let in. Fidelity figures are
``napari_nmsg.engine.noise_model.noise_fidelity``'s (0 is perfect for the errors). Writes
``noise_fidelity.{json,md,png}`` to ``--out``, appending cases as they finish::

    python benchmarks/noise_fidelity.py                      # every suite case
    python benchmarks/noise_fidelity.py --cases vox4-crowded,gold-fiducials
    python benchmarks/noise_fidelity.py --render             # re-render the saved report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    log,
    machine_info,
    machine_markdown,
    true_noise_patches,
    write_json,
)
from _suite_cases import CASES, simulate_case
from _table import Column, render_table

KINDS = ("spectral", "gan")
SAMPLES = 256


BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.5), (0.5, 0.9))  # |k| in cycles per voxel


def band_ratios(patches: np.ndarray, truth: np.ndarray) -> list[float]:
    """Power of ``patches`` over the true noise's, per frequency band: the whole-spectrum
    log error hides a low band that is too strong (signal let into the patches)."""
    from napari_nmsg.engine.noise_model import mean_power_spectrum

    mine, real = mean_power_spectrum(patches), mean_power_spectrum(truth)
    f = np.fft.fftfreq(patches.shape[1])
    radius = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    ratios = []
    for lo, hi in BANDS:
        band = (radius > lo) & (radius <= hi)  # DC left out: the patches are mean-free
        ratios.append(float(mine[band].sum() / real[band].sum()))
    return ratios


def run_case(name: str, seed: int) -> dict[str, Any]:
    import torch

    from napari_nmsg.engine import NMSGConfig, iter_learn_noise, run_events
    from napari_nmsg.engine.noise_model import noise_fidelity, sample_patches

    data = simulate_case(name, seed)
    row: dict[str, Any] = {"role": CASES[name]["role"], "note": CASES[name]["note"]}
    for kind in KINDS:
        config = NMSGConfig.preset("fast", noise_model=kind, seed=seed)
        t0 = time.perf_counter()
        learning = run_events(iter_learn_noise(data["noisy"], config))
        seconds = time.perf_counter() - t0
        size, rng = learning.patches.patch_size, np.random.default_rng(seed + 1)
        truth = true_noise_patches(data, learning.normalisation, size, SAMPLES, rng)
        generator = torch.Generator().manual_seed(seed + 2)
        model = learning.noise_model.cpu()
        generated = sample_patches(model, SAMPLES, learning.patches.patch_size, generator)
        row[kind] = {
            "seconds": seconds,
            "vs_true": noise_fidelity(generated, truth),
            "band_ratios": band_ratios(generated, truth),
            "vs_held_out": learning.fidelity.get(kind),
        }
        row["patches"] = {
            "note": learning.patches.note,
            "vs_true": noise_fidelity(learning.patches.patches, truth),
            "band_ratios": band_ratios(learning.patches.patches, truth),
        }
        log(f"[{name}] {kind}: log-PSD error vs true {row[kind]['vs_true']['log_psd_error']:.3f}"
            f" in {seconds:.0f} s")  # fmt: skip
    return row


def _bands(entry: dict[str, Any]) -> str:
    return " / ".join(f"{v:.2f}" for v in entry.get("band_ratios", ())) or "–"


def _figure(kind: str, key: str, fmt: str = ".3f") -> Column:
    return Column(f"{kind} {key}", lambda r: r[kind]["vs_true"][key], fmt)


COLUMNS = [
    Column("case", lambda r: r["name"]),
    Column("role", lambda r: r["role"]),
    Column("patches' log-PSD err (signal let in)",
           lambda r: r["patches"]["vs_true"]["log_psd_error"], ".3f"),
    Column("power / true per band: patches", lambda r: _bands(r["patches"])),
    Column("spectral", lambda r: _bands(r["spectral"])),
    Column("gan", lambda r: _bands(r["gan"])),
    _figure("spectral", "log_psd_error"),
    _figure("gan", "log_psd_error"),
    _figure("spectral", "variance_ratio"),
    _figure("gan", "variance_ratio"),
    _figure("spectral", "autocorr_error"),
    _figure("gan", "autocorr_error"),
    Column("kurtosis true / gan", lambda r: f"{r['gan']['vs_true']['kurtosis_real']:.2f} / "
           f"{r['gan']['vs_true']['kurtosis']:.2f}"),
    Column("learn s (spectral / gan)", lambda r: f"{r['spectral']['seconds']:.0f} / "
           f"{r['gan']['seconds']:.0f}"),
]  # fmt: skip


def render(report: dict[str, Any]) -> str:
    rows = [{"name": n, **c} for n, c in report["cases"].items()]
    return (
        "# Noise models against the true noise\n\n"
        + machine_markdown(report["machine"])
        + f"\n\nCommand: `{report['command']}`\n\n"
        "Fast preset's noise learning (GAN: 150 steps), 128³ suite cases; figures against "
        f"{SAMPLES} patches of the true noise (noisy − target) from random places. log-PSD "
        "error: RMS log10 spectrum ratio; variance ratio: model / true; autocorr error: "
        "largest difference of the lag 1–3 axial and lag-1 in-plane autocorrelations. Power "
        "per band: model (or patch) power over the true noise's in |k| (cycles/voxel) "
        f"{', '.join(f'{lo}–{hi}' for lo, hi in BANDS)}.\n\n" + render_table(rows, COLUMNS) + "\n"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["cases"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names)), 3.6))
    for k, (label, get) in enumerate(
        [
            ("extracted patches", lambda c: c["patches"]["vs_true"]["log_psd_error"]),
            ("spectral model", lambda c: c["spectral"]["vs_true"]["log_psd_error"]),
            ("GAN", lambda c: c["gan"]["vs_true"]["log_psd_error"]),
        ]
    ):
        ax.bar(x + (k - 1) * 0.27, [get(report["cases"][n]) for n in names], 0.27, label=label)
    ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("log-PSD error vs true noise")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "noise_fidelity")
    p.add_argument("--render", action="store_true", help="only re-render the saved report")
    args = p.parse_args(argv)
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        p.error(f"unknown case: {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "noise_fidelity.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {"cases": {}}
    if not args.render:
        report["machine"] = machine_info()
        report["command"] = "python benchmarks/noise_fidelity.py " + " ".join(argv or sys.argv[1:])
        for name in args.cases.split(","):
            report["cases"][name] = run_case(name, args.seed)
            write_json(json_path, report)
            (args.out / "noise_fidelity.md").write_text(render(report))
            plot(report, args.out / "noise_fidelity.png")
    (args.out / "noise_fidelity.md").write_text(render(report))
    plot(report, args.out / "noise_fidelity.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
