"""A change to a preset, measured against its own training-seed spread.

One run of a preset is a single draw: on the same data another training seed moves its PSNR
by a few tenths of a dB, as much as most changes worth trying. So each case (its data
fixed at seed 0) is fitted and denoised with every training seed and every variant of a
preset (``--preset``, default fast; ``NAME:FIELD=VALUE,...``, fields of ``NMSGConfig``),
otherwise as ``nmsg denoise`` runs it, one run at a time in one process::

    python benchmarks/seed_variants.py --out benchmarks/results/step-budget \\
        --variants "1600 steps:train_steps=1600" "2400 steps:train_steps=2400"

Writes ``seed_variants.{json,md,png}`` to ``--out``, adding runs as they finish; a rerun
into the same ``--out`` skips the runs it holds, and ``--render`` only redraws from the JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
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
    write_report,
)
from _suite_cases import case_names, scored, simulate_case
from _table import Column, render_table

DATA_SEED = 0
REPORT = "seed_variants"
TITLE = "A preset change against its training-seed spread"


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"name:field=value,field=value"`` -> (name, overrides); values are Python literals."""
    name, _, spec = text.partition(":")
    overrides = {}
    for item in filter(None, spec.split(",")):
        field, _, value = item.partition("=")
        overrides[field.strip()] = ast.literal_eval(value.strip())
    return name.strip(), overrides


def run_one(
    data: dict[str, Any], preset: str, seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    from napari_nmsg import denoise
    from napari_nmsg.engine import NMSGConfig, Progress, iter_run, run_events
    from napari_nmsg.metrics import psnr

    noisy = data["noisy"]
    config = NMSGConfig.preset(preset, seed=seed, **overrides)
    scores: dict[int, float] = {}  # the weight average's validation loss by training step
    rollbacks = [0.0]

    def record(event) -> None:
        if isinstance(event, Progress) and event.stage == "train":
            if "validation" in event.metrics:
                scores[event.step] = event.metrics["validation"]
            rollbacks[0] = event.metrics.get("rollbacks", rollbacks[0])

    t0 = time.perf_counter()
    model = run_events(iter_run(noisy, config), record).model
    out = denoise(noisy, model)
    seconds = time.perf_counter() - t0
    return {
        "psnr": psnr(scored(data, out), scored(data, data["target"])),
        "seconds": seconds,
        "base_sigma": model.config.base_sigma,
        "estimated_gain_db": model.quality.gain_over_gaussian_db,
        "gaussian_sigma": model.quality.gaussian_sigma,  # the estimate's reference
        "fell_back": model.quality.fell_back,
        "validation_by_step": scores,
        "rollbacks": int(rollbacks[0]),
    }


def run_key(seed: int, variant: str) -> str:
    return f"seed {seed}, {variant}"


def _runs(case: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    return [r for r in case["runs"].values() if r["variant"] == variant]


def render(report: dict[str, Any]) -> str:
    variants = list(report["variants"])

    def cell(variant: str):
        def value(row: dict[str, Any]) -> str:
            run = row["case"]["runs"].get(run_key(row["seed"], variant))
            return "" if run is None else f"{run['psnr']:.2f} ({run['seconds']:.0f} s)"

        return Column(f"{variant}: PSNR (time)", value)

    rows = [
        {"name": name, "seed": seed, "case": case}
        for name, case in report["cases"].items()
        for seed in report["seeds"]
    ]
    summary = []
    for name, case in report["cases"].items():
        parts = []
        for variant in variants:
            runs = _runs(case, variant)
            if runs:
                psnrs = [r["psnr"] for r in runs]
                parts.append(
                    f"{variant} {statistics.mean(psnrs):.2f} dB (spread "
                    f"{max(psnrs) - min(psnrs):.2f}) in "
                    f"{statistics.mean(r['seconds'] for r in runs):.0f} s (n={len(runs)})"
                )
        summary.append(f"- **{name}**: mean over training seeds: " + "; ".join(parts))
    described = "; ".join(
        f"*{v}*: " + (", ".join(f"`{k}={o!r}`" for k, o in spec.items()) or "the preset")
        for v, spec in report["variants"].items()
    )
    columns = [
        Column("case", lambda r: r["name"]),
        Column("training seed", lambda r: r["seed"]),
        *(cell(v) for v in variants),
    ]
    return "\n\n".join(
        [
            f"# {report['title']}",
            machine_markdown(report["machine"]),
            f"Command: `{report['command']}`. Data of each case at seed {DATA_SEED}; the "
            f"{report.get('preset', 'fast')} preset with the training seed of the row and the "
            "settings of the column "
            f"({described}); fit, validation and denoising with its averaged pairs, timed "
            "together.",
            *report.get("notes", []),
            render_table(rows, columns),
            "\n".join(summary),
        ]
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["cases"])
    variants = list(report["variants"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        case = report["cases"][name]
        for seed in report["seeds"]:
            runs = [case["runs"].get(run_key(seed, v)) for v in variants]
            runs = [r for r in runs if r is not None]
            ax.plot(
                [r["seconds"] for r in runs], [r["psnr"] for r in runs], marker="o",
                label=f"training seed {seed}",
            )  # fmt: skip
            for r in runs:
                ax.annotate(r["variant"], (r["seconds"], r["psnr"]), fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("fit + denoise (s)")
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="vox4-crowded,vox7-crowded")
    p.add_argument("--seeds", default="0,1,2", help="training seeds")
    p.add_argument("--preset", default="fast", help="the preset the variants change")
    p.add_argument(
        "--variants", nargs="+", default=["fast:"], metavar="NAME:FIELD=VALUE,...",
        help="preset variants; NAME: alone is the preset",
    )  # fmt: skip
    p.add_argument("--title", help=f"the report's heading (default: as saved, or {TITLE!r})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "seed-variants")
    p.add_argument("--render", action="store_true", help="only redraw from the saved JSON")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{REPORT}.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {"cases": {}}
    report["title"] = args.title or report.get("title", TITLE)
    if args.render:
        write_report(args.out, REPORT, report, render, plot)
        return 0
    cases = case_names(args.cases, p.error)
    from napari_nmsg.engine import NMSGConfig

    if report.setdefault("preset", args.preset) != args.preset:
        p.error(f"the report holds {report['preset']} runs, not {args.preset}")
    variants = dict(parse_variant(v) for v in args.variants)
    for name, spec in variants.items():
        if report.get("variants", {}).get(name, spec) != spec:
            p.error(f"variant {name!r} is in the report with other settings")
        try:
            NMSGConfig.preset(args.preset, **spec)
        except (TypeError, ValueError) as error:
            p.error(f"variant {name!r}: {error}")
    seeds = [int(s) for s in args.seeds.split(",")]
    command = command_line(__file__, argv)
    report["command"] = f"{report['command']}; then {command}" if "command" in report else command
    report["machine"] = machine_for(report, p.error)
    report["seeds"] = sorted(set(report.get("seeds", [])) | set(seeds))
    report["variants"] = {**report.get("variants", {}), **variants}
    start = time.perf_counter()
    for name in cases:
        case = report["cases"].setdefault(name, {"runs": {}})
        data = simulate_case(name, DATA_SEED)
        for seed in seeds:
            for variant, overrides in variants.items():
                key = run_key(seed, variant)
                if key in case["runs"]:
                    continue
                case["runs"][key] = {
                    "seed": seed, "variant": variant, **run_one(data, args.preset, seed, overrides)
                }  # fmt: skip
                log(f"{name} {key}: {case['runs'][key]}", start)
                write_report(args.out, REPORT, report, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
