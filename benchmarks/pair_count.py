"""Can the self-supervised validation choose how many averaged ±noise pairs inference uses?

For each suite case a preset (``--preset``, default fast) is fitted once (as ``nmsg denoise``
runs it); its network is then applied with each of ``--pairs`` averaged pairs (default 0, i.e.
one pass, 1, 2 and 4), and each variant gets its true PSNR (against the noiseless
reconstruction) and its Stein estimate on the held-out rows (the figure the pipeline judges
results by). Writes ``pair_count.{json,md,png}`` to ``--out``, appending cases as they
finish; a rerun into the same ``--out`` skips the cases it holds, and ``--render`` only
redraws the table and plot from the saved JSON::

    python benchmarks/pair_count.py --out benchmarks/results/pair-count
    python benchmarks/pair_count.py --preset quality --pairs 4,8,16 --cases thickness-y
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    command_line,
    log,
    machine_for,
    machine_markdown,
    save_figure,
    seed_for,
    write_report,
)
from _suite_cases import CASES, scored, simulate_case
from _table import Column, render_table

PAIRS = "0,1,2,4"
LEGACY = {"preset": "fast", "pairs": PAIRS, "reference": "2"}  # reports without these keys


def run_case(name: str, seed: int, preset: str, pairs: list[int]) -> dict[str, Any]:
    from dataclasses import replace

    import torch

    from napari_nmsg import denoise
    from napari_nmsg.engine import NMSGConfig, iter_run, run_events
    from napari_nmsg.engine.noise_amplitude import local_noise_amplitude
    from napari_nmsg.engine.pipeline import prepare_volume
    from napari_nmsg.engine.predictor import validated_estimator
    from napari_nmsg.engine.validation import RecorruptedValidation, held_out_rows
    from napari_nmsg.metrics import psnr

    data = simulate_case(name, seed)
    noisy, truth = data["noisy"], scored(data, data["target"])
    config = NMSGConfig.preset(preset, seed=seed)
    t0 = time.perf_counter()
    model = run_events(iter_run(noisy, config)).model
    fit_s = time.perf_counter() - t0
    # the pipeline's own validation window, draws and amplitude map
    device = torch.device("cpu")
    source = prepare_volume(noisy, config)
    noise = model.noise_model.eval()
    amplitude = local_noise_amplitude(source, noise, torch.Generator().manual_seed(seed))
    rows = source.data_box[1]
    held_out = held_out_rows(rows.stop - rows.start, config.multiple)
    validation = RecorruptedValidation(
        source, noise, amplitude, config.alpha, held_out, config.multiple, device, seed
    )
    sigma, gaussian_risk = validation.best_gaussian_for_input()
    variants = {}
    for count in pairs:
        variant = model.config.replace(inference_pairs=count)
        t = time.perf_counter()
        out = denoise(noisy, replace(model, config=variant))
        seconds = time.perf_counter() - t
        estimate = validated_estimator(model.denoiser, noise, variant, validation.shape, device)
        risk = validation.risk(estimate)
        variants[str(count)] = {
            "psnr": psnr(scored(data, out), truth),
            "denoise_s": seconds,
            "risk": risk,
            "estimated_gain_db": validation.gain_db(risk, gaussian_risk),
        }
    return {
        "fit_s": fit_s,
        "fell_back": bool(model.quality and model.quality.fell_back),
        "gaussian_sigma": sigma,
        "variants": variants,
    }


def _choice(case: dict[str, Any], key: str, best: str) -> str:
    values = {p: v[key] for p, v in case["variants"].items()}
    return (max if best == "max" else min)(values, key=values.get)


def _settings(report: dict[str, Any]) -> tuple[str, list[str], str]:
    """(preset, pair counts, the one the others are compared with)."""
    held = {**LEGACY, **report}
    return held["preset"], held["pairs"].split(","), held["reference"]


def render(report: dict[str, Any]) -> str:
    preset, pairs, reference = _settings(report)

    def cell(count: str):
        def value(case: dict[str, Any]) -> str:
            v = case["variants"][count]
            return f"{v['psnr']:.2f} / {v['estimated_gain_db']:+.2f} ({v['denoise_s']:.0f} s)"

        return Column(f"{count} pairs: PSNR / est. (time)", value)

    def chosen(case: dict[str, Any]) -> str:
        pick = _choice(case, "risk", "min")
        true_best = _choice(case, "psnr", "max")
        v = case["variants"]
        gain = v[pick]["psnr"] - v[reference]["psnr"]
        return f"{pick} ({gain:+.2f}); true best {true_best}"

    columns = [
        Column("case", lambda c: c["name"]),
        *(cell(p) for p in pairs),
        Column(f"lowest estimated risk (PSNR vs {reference} pairs)", chosen),
    ]
    cases = [{"name": n, **c} for n, c in report["cases"].items()]
    return "\n\n".join(
        [
            "# Averaged pairs at inference: true PSNR against the self-supervised estimate",
            machine_markdown(report["machine"]),
            f"Command: `{report['command']}` (seed {report['seed']}). One {preset}-preset fit "
            "per case; the same network applied with each pair count. Estimated gain: Stein "
            "estimate on the held-out rows, dB against the best Gaussian for the input.",
            render_table(cases, columns),
        ]
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """True and estimated PSNR change against the reference pair count, per case and count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n, c in report["cases"].items() if not c["fell_back"]]
    _, pairs, reference = _settings(report)
    others = [p for p in pairs if p != reference]
    x = np.arange(len(names))
    width = 0.8 / len(others)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, key, title in zip(
        axes, ("psnr", "estimated_gain_db"), ("true", "estimated (Stein)"), strict=True
    ):
        for i, count in enumerate(others):
            diff = [
                report["cases"][n]["variants"][count][key]
                - report["cases"][n]["variants"][reference][key]
                for n in names
            ]
            ax.bar(x + (i - (len(others) - 1) / 2) * width, diff, width, label=f"{count} pairs")
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{title}: dB against {reference} pairs")
    axes[0].set_ylabel("dB")
    axes[1].legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from napari_nmsg.engine.config import PRESETS, NMSGConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=sorted(PRESETS), default="fast")
    p.add_argument("--pairs", default=PAIRS, help="comma-separated pair counts to apply")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "pair-count")
    p.add_argument("--render", action="store_true", help="only redraw from the saved JSON")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "pair_count.json"
    if args.render:
        write_report(args.out, "pair_count", json.loads(json_path.read_text()), render, plot)
        return 0
    command = command_line(__file__, argv)
    report: dict[str, Any] = {"cases": {}}
    if json_path.exists():  # a partial run goes on: its cases are kept, not run again
        report = {**LEGACY, **json.loads(json_path.read_text())}
        command = f"{report['command']}; then {command}"
    report["machine"] = machine_for(report, p.error)
    report["seed"] = seed_for(report, args.seed, p.error)
    report["command"] = command
    own = NMSGConfig.preset(args.preset).inference_pairs
    counts = [int(c) for c in args.pairs.split(",")]
    if own not in counts:
        p.error(f"--pairs must include the {args.preset} preset's own {own}")
    settings = {"preset": args.preset, "pairs": args.pairs, "reference": str(own)}
    for key, value in settings.items():  # one report holds one preset and pair list
        if report.setdefault(key, value) != value:
            p.error(f"{args.out} holds a report with {key} {report[key]}, not {value}")
    start = time.perf_counter()
    for name in args.cases.split(","):
        if name in report["cases"]:
            continue
        report["cases"][name] = run_case(name, args.seed, args.preset, counts)
        log(f"{name}: {report['cases'][name]}", start)
        write_report(args.out, "pair_count", report, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
