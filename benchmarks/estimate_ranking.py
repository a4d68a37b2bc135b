"""Does the no-reference estimate order results as their true PSNR does?

Each result's estimate is its gain over the Gaussian filter that the pipeline's own
validation found best for the input (Stein's risk, no ground truth). That Gaussian is a
result too: it is what the refusal returns. So for each suite case this fits the
validation once (a short fit: the Gaussian does not depend on training), denoises the case
with that Gaussian exactly as the refusal would, and scores it against the truth. Then
every pair among it and the given ``seed_variants.py`` runs (same data and training seed)
is called right when the estimated and the true differences have the same sign. A run name
given several times takes each case from the first of its reports that holds it. Writes
``estimate_ranking.{json,md,png}`` to ``--out``::

    python benchmarks/estimate_ranking.py --out benchmarks/results/estimate-ranking \\
        --run fast=benchmarks/results/validation-floor:floor \\
        --run quality=benchmarks/results/validation-floor-quality:floor
"""

from __future__ import annotations

import argparse
import itertools
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
    machine_info,
    machine_markdown,
    save_figure,
    write_report,
)
from _suite_cases import CASES, case_names, scored, simulate_case
from _table import Column, render_table
from presets_summary import parse_source
from seed_variants import run_key

GAUSSIAN = "validated Gaussian"
DATA_SEED = 0  # as seed_variants.py: the data are fixed, the training seed varies
_SAME = 1e-6  # dB: two results that are the same volume (float rounding aside)
_SHORT_FIT_STEPS = 50  # enough to run the validation; the Gaussian it picks ignores training


def load_runs(runs: list[tuple[str, Path, str]], seed: int) -> dict[str, dict[str, Any]]:
    """{run name: {case: that variant's seed_variants row at ``seed``}}; a name given
    several times takes each case from the first of its reports that holds it (as
    ``presets_summary.py`` assembles a preset)."""
    loaded: dict[str, dict[str, Any]] = {}
    for name, folder, variant in runs:
        cases = json.loads((folder / "seed_variants.json").read_text())["cases"]
        key = run_key(seed, variant)
        held = loaded.setdefault(name, {})
        for case, rows in cases.items():
            if key in rows["runs"]:
                held.setdefault(case, rows["runs"][key])
    return loaded


def validated_gaussian(name: str, preset: str, seed: int) -> dict[str, Any]:
    """σ of the Gaussian the validation (training ``seed``) finds best for the input, and
    its true PSNR when the volume is denoised with it as the refusal does (an untrained
    U-Net on that base)."""
    import dataclasses

    from napari_nmsg import denoise
    from napari_nmsg.engine import NMSGConfig, iter_fit_denoiser, run_events
    from napari_nmsg.engine.train import unet_for
    from napari_nmsg.metrics import psnr

    data = simulate_case(name, DATA_SEED)
    config = NMSGConfig.preset(preset, seed=seed, train_steps=_SHORT_FIT_STEPS)
    t0 = time.perf_counter()
    model = run_events(iter_fit_denoiser(data["noisy"], config))
    sigma = model.quality.gaussian_sigma
    config = model.config.replace(base_sigma=sigma, pairing="r2r")
    gaussian = dataclasses.replace(model, config=config, denoiser=unet_for(config, sigma))
    out = denoise(data["noisy"], gaussian)
    return {
        "sigma": sigma,
        "psnr": psnr(scored(data, out), scored(data, data["target"])),
        "seconds": time.perf_counter() - t0,
    }


def pairs_of(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pair of results of one case: true and estimated difference, and whether the
    estimate orders them as the truth does."""
    results = {GAUSSIAN: (case[GAUSSIAN]["psnr"], 0.0)}
    results |= {n: (r["psnr"], r["estimated_gain_db"]) for n, r in case["runs"].items()}
    pairs = []
    for (a, (psnr_a, est_a)), (b, (psnr_b, est_b)) in itertools.combinations(results.items(), 2):
        true, estimated = psnr_b - psnr_a, est_b - est_a
        # a refused network returns the Gaussian itself: both differences are then zero
        tie = abs(true) < _SAME and abs(estimated) < _SAME
        right = tie or true * estimated > 0
        pairs.append({"pair": (a, b), "true": true, "estimated": estimated, "right": right})
    return pairs


def _run_cell(name: str) -> Column:
    def cell(row: dict[str, Any]) -> str:
        r = row["runs"].get(name)
        if r is None:
            return ""
        true = r["psnr"] - row[GAUSSIAN]["psnr"]
        return f"{r['psnr']:.2f} ({r['estimated_gain_db']:+.2f} / {true:+.2f})"

    return Column(f"{name}: PSNR (est. / true gain)", cell)


def _sources(runs: dict[str, list[str]]) -> str:
    named = (f"*{n}*: " + ", ".join(f"`{s}`" for s in sources) for n, sources in runs.items())
    return "; ".join(named)


def render(report: dict[str, Any]) -> str:
    rows = [{"case": c, **r} for c, r in report["cases"].items()]
    columns = [
        Column("case", lambda r: r["case"]),
        Column("role", lambda r: CASES[r["case"]]["role"]),
        Column(
            "validated Gaussian: σ, PSNR",
            lambda r: f"{r[GAUSSIAN]['sigma']:g}, {r[GAUSSIAN]['psnr']:.2f}",
        ),
        *(_run_cell(name) for name in report["runs"]),
        Column("pairs right", lambda r: f"{sum(p['right'] for p in r['pairs'])}/{len(r['pairs'])}"),
    ]
    pairs = [p for r in rows for p in r["pairs"]]
    right = sum(p["right"] for p in pairs)
    wrong = [
        f"`{r['case']}` {p['pair'][0]} vs {p['pair'][1]} (true {p['true']:+.3f} dB, "
        f"estimated {p['estimated']:+.3f})"
        for r in rows
        for p in r["pairs"]
        if not p["right"]
    ]
    return (
        "# The no-reference estimate's ranking against the truth\n\n"
        + machine_markdown(report["machine"])
        + f"\n\nCommand: `{report['command']}`\n\n"
        f"Runs: {_sources(report['runs'])}, training seed {report['seed']}; a case's row "
        "comes from the first of a run's reports that holds it. Gains in dB over the "
        "validated Gaussian (the Gaussian the pipeline's validation found best for the "
        "input, applied as its refusal applies it). A pair is right when the estimate "
        f"orders its two results as their true PSNR does.\n\n**{right} of {len(pairs)} pairs right "
        f"({right / max(len(pairs), 1):.1%}).**"
        + (" Wrong: " + "; ".join(wrong) + "." if wrong else "")
        + "\n\n"
        + render_table(rows, columns)
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, name in enumerate(report["runs"]):
        points = [
            (run["psnr"] - case[GAUSSIAN]["psnr"], run["estimated_gain_db"])
            for case in report["cases"].values()
            if (run := case["runs"].get(name))
        ]
        ax.scatter(*zip(*points, strict=True), color=f"C{i}", label=name)
    top = max(max(ax.get_xlim()), max(ax.get_ylim()))
    ax.plot([0, top], [0, top], "k:", linewidth=1, label="estimate = truth")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("true gain over the validated Gaussian (dB)")
    ax.set_ylabel("estimated gain (dB)")
    ax.set_title("No-reference estimate against the truth")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=parse_source, action="append", default=[],
                   help="NAME=DIR:VARIANT, a seed_variants.py run (repeat)")  # fmt: skip
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--seed", type=int, default=0, help="the runs' training seed")
    p.add_argument("--preset", default="fast", help="the preset whose validation is fitted")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "estimate-ranking")
    p.add_argument("--render", action="store_true", help="only redraw from the saved JSON")
    args = p.parse_args(argv)
    if args.render:
        report = json.loads((args.out / "estimate_ranking.json").read_text())
        for case in report["cases"].values():
            case["pairs"] = pairs_of(case)
        write_report(args.out, "estimate_ranking", report, render, plot)
        return 0
    if not args.run:
        p.error("give at least one --run")
    cases = case_names(args.cases, p.error)
    runs = load_runs(args.run, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "command": command_line(__file__, argv),
        "seed": args.seed,
        "runs": {},  # each name's reports, in the order a case is looked for in them
        "cases": {},
    }
    for name, folder, variant in args.run:
        report["runs"].setdefault(name, []).append(f"{folder}:{variant}")
    for name in cases:
        case = {
            GAUSSIAN: validated_gaussian(name, args.preset, args.seed),
            "runs": {run: rows[name] for run, rows in runs.items() if name in rows},
        }
        case["pairs"] = pairs_of(case)
        report["cases"][name] = case
        log(f"[{name}] {case[GAUSSIAN]}")
        write_report(args.out, "estimate_ranking", report, render, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
