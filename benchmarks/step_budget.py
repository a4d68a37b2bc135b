"""How much the fast preset loses with fewer training steps, beside its training-seed noise.

One run of a preset is a single draw: on the same data another training seed moves its PSNR
by a few tenths of a dB, as much as the step budgets compared here. So each case (its data
fixed at seed 0) is fitted and denoised with every training seed and every step count, the
fast preset otherwise as ``nmsg denoise`` runs it, one run at a time in one process::

    python benchmarks/step_budget.py --out benchmarks/results/step-budget

Writes ``step_budget.{json,md,png}`` to ``--out``, adding runs as they finish; a rerun into
the same ``--out`` skips the runs it holds, and ``--render`` only redraws from the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, log, machine_for, machine_markdown, write_report
from _suite_cases import CASES, scored, simulate_case
from _table import Column, render_table

DATA_SEED = 0


def run_one(data: dict[str, Any], seed: int, steps: int) -> dict[str, Any]:
    from napari_nmsg import denoise
    from napari_nmsg.engine import NMSGConfig, iter_run, run_events
    from napari_nmsg.metrics import psnr

    noisy = data["noisy"]
    config = NMSGConfig.preset("fast", seed=seed, train_steps=steps)
    t0 = time.perf_counter()
    model = run_events(iter_run(noisy, config)).model
    out = denoise(noisy, model)
    seconds = time.perf_counter() - t0
    return {
        "psnr": psnr(scored(data, out), scored(data, data["target"])),
        "seconds": seconds,
        "base_sigma": model.config.base_sigma,
        "estimated_gain_db": model.quality.gain_over_gaussian_db,
    }


def _key(seed: int, steps: int) -> str:
    return f"seed {seed}, {steps} steps"


def _runs(case: dict[str, Any], steps: int) -> list[dict[str, Any]]:
    return [r for r in case["runs"].values() if r["steps"] == steps]


def render(report: dict[str, Any]) -> str:
    budgets = report["steps"]

    def cell(steps: int):
        def value(row: dict[str, Any]) -> str:
            run = row["case"]["runs"].get(_key(row["seed"], steps))
            return "" if run is None else f"{run['psnr']:.2f} ({run['seconds']:.0f} s)"

        return Column(f"{steps} steps: PSNR (time)", value)

    rows = [
        {"name": name, "seed": seed, "case": case}
        for name, case in report["cases"].items()
        for seed in report["seeds"]
    ]
    summary = []
    for name, case in report["cases"].items():
        means = {}
        for steps in budgets:
            runs = _runs(case, steps)
            if runs:
                means[steps] = (
                    statistics.mean(r["psnr"] for r in runs),
                    statistics.mean(r["seconds"] for r in runs),
                    len(runs),
                )
        parts = [f"{s} steps {p:.2f} dB in {t:.0f} s (n={n})" for s, (p, t, n) in means.items()]
        summary.append(f"- **{name}**: mean over training seeds: " + "; ".join(parts))
    columns = [
        Column("case", lambda r: r["name"]),
        Column("training seed", lambda r: r["seed"]),
        *(cell(s) for s in budgets),
    ]
    return "\n\n".join(
        [
            "# The fast preset's step budget against its training-seed spread",
            machine_markdown(report["machine"]),
            f"Command: `{report['command']}`. Data of each case at seed {DATA_SEED}; the "
            "fast preset with the training seed and step count of the column (fit, "
            "validation and denoising with its averaged pairs, timed together).",
            render_table(rows, columns),
            "\n".join(summary),
        ]
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["cases"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        case = report["cases"][name]
        for seed in report["seeds"]:
            runs = [case["runs"].get(_key(seed, s)) for s in report["steps"]]
            runs = [r for r in runs if r is not None]
            ax.plot(
                [r["seconds"] for r in runs], [r["psnr"] for r in runs], marker="o",
                label=f"training seed {seed}",
            )  # fmt: skip
            for r in runs:
                ax.annotate(str(r["steps"]), (r["seconds"], r["psnr"]), fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("fit + denoise (s)")
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="vox4-crowded,vox7-crowded")
    p.add_argument("--seeds", default="0,1,2", help="training seeds")
    p.add_argument("--steps", default="1600,2400", help="step budgets")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "step-budget")
    p.add_argument("--render", action="store_true", help="only redraw from the saved JSON")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "step_budget.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {"cases": {}}
    if args.render:
        write_report(args.out, "step_budget", report, render, plot)
        return 0
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        p.error(f"unknown case: {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(s) for s in args.steps.split(",")]
    command = "python benchmarks/step_budget.py " + " ".join(argv or sys.argv[1:])
    report["command"] = f"{report['command']}; then {command}" if "command" in report else command
    report["machine"] = machine_for(report, p.error)
    report["seeds"] = sorted(set(report.get("seeds", [])) | set(seeds))
    report["steps"] = sorted(set(report.get("steps", [])) | set(budgets))
    start = time.perf_counter()
    for name in args.cases.split(","):
        case = report["cases"].setdefault(name, {"runs": {}})
        data = simulate_case(name, DATA_SEED)
        for seed in seeds:
            for steps in budgets:
                if _key(seed, steps) in case["runs"]:
                    continue
                case["runs"][_key(seed, steps)] = {
                    "seed": seed, "steps": steps, **run_one(data, seed, steps)
                }  # fmt: skip
                log(f"{name} {_key(seed, steps)}: {case['runs'][_key(seed, steps)]}", start)
                write_report(args.out, "step_budget", report, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
