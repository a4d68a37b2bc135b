"""How far a preset's PSNR, and its difference to another method, moves between runs
that differ only in their seed (training, and data where the case fixes none) or machine,
read from saved reports: the noise floor under any one-run comparison.

    python benchmarks/seed_spread.py RUN.json [RUN.json ...] --case tilt70-dosesym \\
        --out benchmarks/results/seed-spread

A ``suite.py`` report is one run (one machine, one seed: it refuses to mix either); a
``seed_variants.py`` report holds one run per training seed, its variants as methods.
Reports of the same machine and seed join into one row, so a preset and a peer compare
within a run. The table has, per method, the spread (max − min) over the runs, and the
difference of each method against the first method given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, save_figure, write_report
from _table import Column, render_table


def load_runs(paths: list[Path], case: str, methods: list[str]) -> list[dict[str, Any]]:
    """One row per machine and seed: each method's PSNR."""
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        machine = report["machine"]
        cpu = f"{machine['cpu_model']} ({machine.get('cpu_capability', '?')})"
        for seed, psnr in _seeded_psnr(report, case).items():
            wanted = {m: v for m, v in psnr.items() if m in methods}
            if wanted:
                run = runs.setdefault((cpu, seed), {"cpu": cpu, "seed": seed, "psnr": {}})
                run["psnr"].update(wanted)
    return sorted(runs.values(), key=lambda r: (r["cpu"], r["seed"]))


def _seeded_psnr(report: dict[str, Any], case: str) -> dict[int, dict[str, float]]:
    """{seed: {method: PSNR}} of one case, from a suite.py or a seed_variants.py report."""
    if "variants" not in report:
        rows = report["cases"][case]["methods"]
        return {report.get("seed", 0): {m: row["psnr"] for m, row in rows.items()}}
    seeded: dict[int, dict[str, float]] = {}
    for row in report["cases"][case]["runs"].values():
        seeded.setdefault(row["seed"], {})[row["variant"]] = row["psnr"]
    return seeded


def render(report: dict[str, Any]) -> str:
    methods, runs = report["methods"], report["runs"]
    first = methods[0]
    columns = [Column("CPU", lambda r: r["cpu"]), Column("seed", lambda r: r["seed"])]
    columns += [Column(f"{m} dB", lambda r, m=m: r["psnr"].get(m), ".2f") for m in methods]
    columns += [
        Column(f"{m} − {first} dB", lambda r, m=m: _difference(r, m, first), "+.2f")
        for m in methods[1:]
    ]
    spreads = ", ".join(
        f"{m} {s:.2f} dB (mean {report['mean'][m]:.2f})" for m, s in report["spread"].items()
    )
    differences = []
    for m in methods[1:]:
        values = [d for d in (_difference(r, m, first) for r in runs) if d is not None]
        if values:
            mean = sum(values) / len(values)
            differences.append(
                f"{m} − {first} {mean:+.2f} dB ({min(values):+.2f}..{max(values):+.2f})"
            )
    return (
        f"# Seed spread on {report['case']}\n\n"
        f"Command: `{report['command']}`\n\n"
        "PSNR (dB) of one case, one row per run; where the case fixes no data seed, the seed "
        "draws its data too, so the methods' own PSNR moves with the data and their difference "
        "is what compares. The reports (machine, command) are listed below.\n\n"
        + render_table(runs, columns)
        + f"\n\nSpread (max − min over the runs): {spreads}."
        + (f" Mean difference: {'; '.join(differences)}." if differences else "")
        + "\n\nReports:\n"
        + "\n".join(f"- `{path}`" for path in report["reports"])
        + "\n"
    )


def _difference(run: dict[str, Any], method: str, first: str) -> float | None:
    psnr = run["psnr"]
    return psnr[method] - psnr[first] if method in psnr and first in psnr else None


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    methods = report["methods"]
    for run in report["runs"]:  # a run's methods joined: same data, seed and machine
        shown = [i for i, m in enumerate(methods) if m in run["psnr"]]
        ax.plot(shown, [run["psnr"][methods[i]] for i in shown], color="0.8", zorder=0)
    for i, method in enumerate(methods):
        values = [r["psnr"][method] for r in report["runs"] if method in r["psnr"]]
        ax.scatter([i] * len(values), values, label=method)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{report['case']}: one dot per run (seed, machine)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path, help="suite.json or seed_variants.json reports")
    p.add_argument("--case", required=True)
    p.add_argument("--methods", default="fast,fast-gan", help="the first is the reference")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    runs = load_runs(args.reports, args.case, methods)
    spread, mean = {}, {}
    for m in methods:
        values = [r["psnr"][m] for r in runs if m in r["psnr"]]
        if len(values) > 1:
            spread[m], mean[m] = max(values) - min(values), sum(values) / len(values)
    report = {
        "case": args.case,
        "methods": methods,
        "runs": runs,
        "reports": [str(path) for path in args.reports],
        "spread": spread,
        "mean": mean,
        "command": command_line(__file__, argv),
    }
    write_report(args.out, "seed_spread", report, render, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
