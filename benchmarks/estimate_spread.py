"""How much the no-reference estimate moves with the validation's own noise draws.

For each suite case the fast preset is fitted once (training seed 0); its result is then
judged on the pipeline's validation window with several validation seeds (other probe
draws, same network and data). Each draw gives the estimated gain over the Gaussian best
for the input twice: with the spectral model's expected noise power subtracted (what the
pipeline does) and with the probes' own power (what it did before), beside the true gain
of the same two results on the same rows. Writes ``estimate_spread.{json,md,png}``::

    python benchmarks/estimate_spread.py --cases gold-fiducials,vox4-crowded,snr0.03
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    command_line,
    log,
    machine_info,
    machine_markdown,
    save_figure,
    write_report,
)
from _suite_cases import case_names, simulate_case
from _table import Column, render_table


def run_case(name: str, draws: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from napari_nmsg.engine import NMSGConfig, iter_learn_noise, run_events
    from napari_nmsg.engine.noise_amplitude import local_noise_amplitude
    from napari_nmsg.engine.pipeline import iter_fit_denoiser, prepare_volume
    from napari_nmsg.engine.predictor import validated_estimator
    from napari_nmsg.engine.unet import gaussian_blur, gaussian_kernel
    from napari_nmsg.engine.validation import RecorruptedValidation, held_out_rows
    from napari_nmsg.engine.volume import NormalisedVolume

    data = simulate_case(name, 0)
    config = NMSGConfig.preset("fast", seed=0)
    t0 = time.perf_counter()
    noise = run_events(iter_learn_noise(data["noisy"], config))
    model = run_events(iter_fit_denoiser(data["noisy"], config, noise))
    fit_s = time.perf_counter() - t0
    config, spectral, device = model.config, noise.spectral_model, torch.device("cpu")
    source = prepare_volume(data["noisy"], config)
    clean = NormalisedVolume(data["target"], source.normalisation, source.fill)
    amplitude = local_noise_amplitude(source, spectral, torch.Generator().manual_seed(0))
    rows = source.data_box[1]
    held_out = held_out_rows(rows.stop - rows.start, config.multiple)
    results = []
    for seed in range(draws):
        noisy, truth = (
            RecorruptedValidation(
                v, spectral, amplitude, config.alpha, held_out, config.multiple, device, seed
            )
            for v in (source, clean)
        )
        scored = noisy.scored
        estimate = validated_estimator(
            model.denoiser, model.noise_model, config, noisy.shape, device
        )
        net_risk = noisy.risk(estimate)
        sigma, gaussian_risk = noisy.best_gaussian_for_input()
        own = float(np.mean([float(w[scored].pow(2).mean()) for w in noisy.probes]))
        shift = noisy.noise_power - own  # risks with the probes' own power are this higher
        with torch.no_grad():
            net_true = float((estimate(noisy.noisy) - truth.noisy)[scored].pow(2).mean())
            blurred = gaussian_blur(noisy.noisy, gaussian_kernel(sigma))
            gaussian_true = float((blurred - truth.noisy)[scored].pow(2).mean())
        results.append(
            {
                "seed": seed,
                "gaussian_sigma": sigma,
                "expected_power": noisy.gain_db(net_risk, gaussian_risk),
                "probes_power": noisy.gain_db(net_risk + shift, gaussian_risk + shift),
                "true": float(10 * np.log10(gaussian_true / net_true)),
            }
        )
        log(f"[{name}] validation seed {seed}: {results[-1]}")
    return {"fit_s": fit_s, "draws": results}


def _stats(case: dict[str, Any], key: str) -> str:
    values = [d[key] for d in case["draws"]]
    return f"{sum(values) / len(values):+.2f} ({min(values):+.2f}..{max(values):+.2f})"


COLUMNS = [
    Column("case", lambda r: r["case"]),
    Column("estimate, expected power: mean (range)", lambda r: _stats(r, "expected_power")),
    Column("estimate, probes' own power: mean (range)", lambda r: _stats(r, "probes_power")),
    Column("true gain: mean (range)", lambda r: _stats(r, "true")),
]


def render(report: dict[str, Any]) -> str:
    rows = [{"case": c, **r} for c, r in report["cases"].items()]
    return (
        "# The no-reference estimate over validation draws\n\n"
        + machine_markdown(report["machine"])
        + f"\n\nCommand: `{report['command']}`\n\n"
        "One fast-preset fit per case (training seed 0), judged with "
        f"{report['draws']} validation seeds (other probe draws, same network and rows): dB "
        "gained over the Gaussian best for the input (σ by Stein), estimated with the "
        "spectral model's expected noise power subtracted (the pipeline's) or with its two "
        "probes' own power (before), and the true gain of the same two results on the same "
        "rows. The true gain moves only where a draw changes the Gaussian's σ.\n\n"
        + render_table(rows, COLUMNS)
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(report["cases"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    styles = {"expected_power": ("o", "expected power"), "probes_power": ("x", "probes' own")}
    for offset, (key, (marker, label)) in zip((-0.15, 0.15), styles.items(), strict=True):
        for i, case in enumerate(cases):
            values = [d[key] for d in report["cases"][case]["draws"]]
            ax.scatter([i + offset] * len(values), values, marker=marker, color=f"C{i}",
                       label=label if i == 0 else None)  # fmt: skip
    for i, case in enumerate(cases):
        true = [d["true"] for d in report["cases"][case]["draws"]]
        ax.hlines(true, i - 0.3, i + 0.3, colors="k", linewidth=1,
                  label="true" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("dB over the best Gaussian")
    ax.set_title("Estimated gain per validation draw")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="gold-fiducials,vox4-crowded,snr0.03")
    p.add_argument("--draws", type=int, default=6, help="validation seeds per case")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "estimate_spread")
    args = p.parse_args(argv)
    cases = case_names(args.cases, p.error)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "command": command_line(__file__, argv),
        "draws": args.draws,
        "cases": {},
    }
    for name in cases:
        report["cases"][name] = run_case(name, args.draws)
        write_report(args.out, "estimate_spread", report, render, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
