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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    command_line,
    log,
    machine_for,
    machine_markdown,
    save_figure,
    seed_for,
    true_noise_field,
    true_noise_patches,
    write_json,
)
from _field_fidelity import (
    BLOCK,
    DENSE_FRACTION,
    LOW_SIGMA,
    NEAR,
    STREAK_OFFSETS,
    compare_fields,
    dense_neighbourhood,
    field_statistics,
    truth_summary,
)
from _suite_cases import CASES, case_names, simulate_case
from _table import Column, render_table

KINDS = ("spectral", "gan")
SAMPLES = 256


BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.5), (0.5, 0.9))  # |k| in cycles per voxel


def band_ratios(patches: np.ndarray, truth: np.ndarray) -> list[float]:
    """Power of ``patches`` over the true noise's, per frequency band: the whole-spectrum
    log error hides a low band that is too strong (signal let into the patches)."""
    from napari_nmsg.engine.noise_model import frequency_radius, mean_power_spectrum

    mine, real = mean_power_spectrum(patches), mean_power_spectrum(truth)
    radius = frequency_radius(patches.shape[1])
    ratios = []
    for lo, hi in BANDS:
        band = (radius > lo) & (radius <= hi)  # DC left out: the patches are mean-free
        ratios.append(float(mine[band].sum() / real[band].sum()))
    return ratios


class TrueField:
    """The case's true noise over the whole volume (normalised, wedge axis first), the
    region that holds data, its dense neighbourhood, and a model's field to compare."""

    def __init__(self, data: dict[str, Any], config: Any):
        from napari_nmsg.engine.pipeline import prepare_volume
        from napari_nmsg.engine.volume import canonical_view

        self.source = prepare_volume(data["noisy"], config)
        norm = self.source.normalisation
        self.noise, self.inside = map(np.ascontiguousarray, true_noise_field(data, norm))
        target = np.ascontiguousarray(canonical_view(data["target"], norm.wedge_axis))
        self.near = dense_neighbourhood(target, self.inside)
        self.truth = field_statistics(self.noise, self.inside, self.near)

    def compare(self, model: Any, generator: Any, amplitude: bool = True) -> dict[str, float]:
        """``model``'s noise over the whole volume, scaled by the local-amplitude map as the
        training pairs get it (unless not ``amplitude``), against the true noise."""
        import torch

        from napari_nmsg.engine.noise_amplitude import AmplitudeSource, local_noise_amplitude

        shape = self.noise.shape
        with torch.no_grad():
            field = model.sample(1, shape, generator)[0, 0].numpy()
        if amplitude:
            coarse = local_noise_amplitude(self.source, model, generator)
            field = field * AmplitudeSource(coarse, shape).read(tuple(slice(0, n) for n in shape))
        return compare_fields(field_statistics(field, self.inside, self.near), self.truth)


def run_case(name: str, seed: int) -> dict[str, Any]:
    import torch

    from napari_nmsg.engine import NMSGConfig, iter_learn_noise, run_events
    from napari_nmsg.engine.noise_model import noise_fidelity, sample_patches

    data = simulate_case(name, seed)
    row: dict[str, Any] = {"role": CASES[name]["role"], "note": CASES[name]["note"]}
    fields = TrueField(data, NMSGConfig.preset("fast", seed=seed))
    row["true_field"] = truth_summary(fields.truth)
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
            "field": fields.compare(model, torch.Generator().manual_seed(seed + 3)),
        }
        if kind == "spectral":  # what the amplitude map adds: the same noise without it
            row[kind]["field_stationary"] = fields.compare(
                model, torch.Generator().manual_seed(seed + 3), amplitude=False
            )
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


def _field(kind: str, key: str, fmt: str = ".3f") -> Callable[[dict[str, Any]], str]:
    return lambda r: format(r[kind]["field"][key], fmt) if "field" in r[kind] else "–"


def _trio(key: str, fmt: str = ".3f") -> Column:
    """The true noise's figure / the spectral model's / the GAN's."""

    def cell(r: dict[str, Any]) -> str:
        if "true_field" not in r:
            return "–"
        return " / ".join(
            [format(r["true_field"][key], fmt), _field("spectral", key, fmt)(r),
             _field("gan", key, fmt)(r)]
        )  # fmt: skip

    return Column(f"{key.replace('_', ' ')}: true / spectral / gan", cell)


def _map_errors(r: dict[str, Any]) -> str:
    """Variance-map error of the spectral model without the map, then with it, then GAN."""
    spectral = r["spectral"]
    if "field_stationary" not in spectral:
        return "–"
    errors = [spectral["field_stationary"], spectral["field"], r["gan"]["field"]]
    return " / ".join(f"{e['variance_map_error']:.3f}" for e in errors)


FIELD_COLUMNS = [
    Column("case", lambda r: r["name"]),
    _trio("variance_spread"),
    Column("variance-map error: no map / spectral / gan", lambda r: _map_errors(r)),
    Column("variance-map corr (spectral)", _field("spectral", "variance_map_correlation")),
    Column("low-band power / true: spectral / gan", lambda r: " / ".join(
        [_field("spectral", "low_power_ratio")(r), _field("gan", "low_power_ratio")(r)])),
    Column("near-dense variance / true (spectral)", _field("spectral", "near_variance_ratio")),
    Column("streak corr at 45°, true: all / near dense", lambda r: (
        f"{r['true_field']['streaks']['45']:.3f} / {r['true_field']['streaks_near']['45']:.3f}")
        if "true_field" in r else "–"),
    Column("streak error near dense: spectral / gan", lambda r: " / ".join(
        [_field("spectral", "streak_error_near")(r), _field("gan", "streak_error_near")(r)])),
    _trio("skewness"),
    _trio("kurtosis"),
    _trio("kurtosis_near"),
]  # fmt: skip


def render(report: dict[str, Any]) -> str:
    rows = [{"name": n, **c} for n, c in report["cases"].items()]
    return (
        "# Noise models against the true noise\n\n"
        + machine_markdown(report["machine"])
        + f"\n\nCommand: `{report['command']}` (seed {report.get('seed', 0)})\n\n"
        "Fast preset's noise learning (GAN: 150 steps), 128³ suite cases; figures against "
        f"{SAMPLES} patches of the true noise (noisy − target) from random places. log-PSD "
        "error: RMS log10 spectrum ratio; variance ratio: model / true; autocorr error: "
        "largest difference of the lag 1–3 axial and lag-1 in-plane autocorrelations. Power "
        "per band: model (or patch) power over the true noise's in |k| (cycles/voxel) "
        f"{', '.join(f'{lo}–{hi}' for lo, hi in BANDS)}.\n\n"
        + render_table(rows, COLUMNS)
        + "\n\n## Over the whole volume, as the training pairs get it\n\n"
        "Each model's noise sampled over the whole volume and scaled by the local-amplitude "
        "map (as the pairs add it), against the true noise. Variance spread: std of log2 "
        f"variance over {BLOCK}³ boxes (0: stationary); variance-map error: RMS log2 ratio "
        'of the box variances after matching their means ("no map": the spectral model '
        "without the amplitude map); low-band power: the fields low-passed by a Gaussian of "
        f"σ {LOW_SIGMA} voxels, power over all the data (specimen included) against the "
        "true noise's; near dense: within "
        f"{NEAR} voxels of the densest {DENSE_FRACTION:.1%} of the low-passed target (the "
        "beads in `gold-fiducials`); streak corr: correlation at a lag of ~4 voxels at 45° "
        "in the plane across the tilt axis; streak error: largest difference of those "
        f"correlations at {', '.join(f'{a}°' for a in STREAK_OFFSETS)}. Skewness and "
        "(excess) kurtosis of the voxel values, everywhere and near dense objects.\n\n"
        + render_table(rows, FIELD_COLUMNS)
        + "\n"
    )


def _has(case: dict[str, Any], get: Callable[[dict[str, Any]], float]) -> bool:
    """Whether a case's saved report has the figure (older runs lack the field figures)."""
    try:
        get(case)
    except KeyError:
        return False
    return True


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["cases"])
    x = np.arange(len(names))
    panels = [
        (
            "log-PSD error vs true noise",
            [
                ("extracted patches", lambda c: c["patches"]["vs_true"]["log_psd_error"]),
                ("spectral model", lambda c: c["spectral"]["vs_true"]["log_psd_error"]),
                ("GAN", lambda c: c["gan"]["vs_true"]["log_psd_error"]),
            ],
        ),
        (
            "variance-map error (RMS log2)",
            [
                ("spectral, no map",
                 lambda c: c["spectral"]["field_stationary"]["variance_map_error"]),
                ("spectral + map", lambda c: c["spectral"]["field"]["variance_map_error"]),
                ("GAN + map", lambda c: c["gan"]["field"]["variance_map_error"]),
            ],
        ),
    ]  # fmt: skip
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.7 * len(names)), 6.4), sharex=True)
    for ax, (ylabel, bars) in zip(axes, panels, strict=True):
        shown = [n for n in names if all(_has(report["cases"][n], get) for _, get in bars)]
        where = np.array([names.index(n) for n in shown], dtype=float)
        for k, (label, get) in enumerate(bars):
            ax.bar(where + (k - 1) * 0.27, [get(report["cases"][n]) for n in shown], 0.27,
                   label=label)  # fmt: skip
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[-1].set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "noise_fidelity")
    p.add_argument("--render", action="store_true", help="only re-render the saved report")
    args = p.parse_args(argv)
    cases = case_names(args.cases, p.error)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "noise_fidelity.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {"cases": {}}
    if not args.render:
        report["machine"] = machine_for(report, p.error)
        report["seed"] = seed_for(report, args.seed, p.error)
        command = command_line(__file__, argv)
        # runs replace or add case rows of the saved report: it keeps every command
        saved = report.get("command")
        report["command"] = f"{saved}; then {command}" if saved else command
        for name in cases:
            report["cases"][name] = run_case(name, args.seed)
            write_json(json_path, report)
            (args.out / "noise_fidelity.md").write_text(render(report))
            plot(report, args.out / "noise_fidelity.png")
    (args.out / "noise_fidelity.md").write_text(render(report))
    plot(report, args.out / "noise_fidelity.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
