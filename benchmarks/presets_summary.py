"""Today's presets beside the suite's peers, assembled from reports already made.

A preset change is measured with ``seed_variants.py`` (its own machine, one run at a time);
the peers (oracle Gaussian, Topaz-3D, Noise2Noise on halves) ran once, in ``suite.py``. This
puts one variant's runs per preset next to them, case by case, without running anything::

    python benchmarks/presets_summary.py --out benchmarks/results/presets-today \\
        --preset "fast=benchmarks/results/fast-depth2:two levels, lr 1.5e-3" \\
        --preset "quality=benchmarks/results/quality-recipe:fast net, 4000 steps"

A preset may name several reports; a case takes the first that holds it. ``--rerun`` names
``suite.py`` reports whose peer rows were made again later (with today's code): a case's
peer takes the first rerun that holds it, marked † in the table. The first preset
named is held to the fast preset's target (at or above both the oracle Gaussian and
Topaz-3D), the others to the quality preset's (at or above Noise2Noise on halves). PSNR
moves between machines by float rounding only (amplified by training like another seed);
times do not, so each source's machine is written beside the table.

Writes ``presets.{json,md,png}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, command_line, machine_markdown, save_figure, write_report
from _table import Column, render_table
from seed_variants import run_key

REPORT = "presets"
PEERS = {"gaussian": "oracle Gaussian", "topaz": "Topaz-3D", "n2n": "N2N on halves"}


def parse_source(text: str) -> tuple[str, Path, str]:
    """``"preset=REPORT_DIR:VARIANT"`` -> (preset, report dir, variant)."""
    preset, _, rest = text.partition("=")
    folder, _, variant = rest.partition(":")
    if not (preset and folder and variant):
        raise ValueError(f"expected PRESET=REPORT_DIR:VARIANT, not {text!r}")
    return preset.strip(), Path(folder.strip()), variant.strip()


def peer_row(name: str, suite: dict[str, Any], reruns: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The peers' PSNR for one case, each from the first rerun that holds it, else the suite;
    ``rerun`` lists the peers taken from a rerun."""
    row: dict[str, Any] = {"rerun": []}
    for method in PEERS:
        for report in reruns:
            run = report["cases"].get(name, {}).get("methods", {}).get(method)
            if run is not None and "psnr" in run:
                row[method] = run["psnr"]
                row["rerun"].append(method)
                break
        else:
            row[method] = suite["cases"][name]["methods"][method]["psnr"]
    return row


def assemble(
    suite: dict[str, Any],
    sources: list[tuple[str, Path, str]],
    seed: int,
    reruns: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    reports = {
        folder: json.loads((folder / "seed_variants.json").read_text()) for _, folder, _ in sources
    }
    cases = {}
    for name, case in suite["cases"].items():
        row = {"role": case["role"], **peer_row(name, suite, reruns)}
        for preset, folder, variant in sources:
            if preset in row:
                continue
            run = reports[folder]["cases"].get(name, {}).get("runs", {}).get(run_key(seed, variant))
            if run is not None:
                row[preset] = run["psnr"]
                row[f"{preset} seconds"] = run["seconds"]
                row[f"{preset} source"] = f"{folder.name}: {variant}"
        cases[name] = row
    machines = {"suite (peers)": suite["machine"]}
    machines.update({f"rerun {i + 1}": report["machine"] for i, report in enumerate(reruns)})
    machines.update({folder.name: reports[folder]["machine"] for _, folder, _ in sources})
    presets = list(dict.fromkeys(p for p, _, _ in sources))
    return {"cases": cases, "presets": presets, "machines": machines, "seed": seed}


def render(report: dict[str, Any]) -> str:
    presets = report["presets"]

    def preset_cell(preset: str):
        def value(row: dict[str, Any]) -> str:
            if preset not in row:
                return ""
            beats = max(row["gaussian"], row["topaz"]) if preset == presets[0] else row["n2n"]
            text = f"{row[preset]:.2f}"
            return f"**{text}**" if round(row[preset], 2) >= round(beats, 2) else text

        return value

    def peer_cell(row: dict[str, Any], method: str) -> str:
        return f"{row[method]:.2f}" + ("†" if method in row.get("rerun", ()) else "")

    def seconds_cell(preset: str):
        return lambda row: f"{row[f'{preset} seconds']:.0f} s" if preset in row else ""

    columns = [
        Column("case", lambda r: r["name"]),
        Column("role", lambda r: r["role"]),
        *(Column(label, lambda r, m=m: peer_cell(r, m)) for m, label in PEERS.items()),
    ]
    for preset in presets:
        columns.append(Column(preset, preset_cell(preset)))
        columns.append(Column(f"{preset} time", seconds_cell(preset)))
    rows = [{"name": name, **row} for name, row in report["cases"].items()]
    sources = sorted({r[f"{p} source"] for r in rows for p in presets if f"{p} source" in r})
    machines = [f"- {name}: {machine_markdown(info)}" for name, info in report["machines"].items()]
    return "\n\n".join(
        [
            "# Today's presets beside the suite's peers",
            f"Command: `{report['command']}`. Training seed {report['seed']}. Bold: "
            f"{presets[0]} at or above both the oracle Gaussian and Topaz-3D; "
            f"{', '.join(presets[1:]) or 'the others'} at or above Noise2Noise on halves.",
            "Sources: "
            + "; ".join(sources)
            + "."
            + (
                f" †: rerun with today's code ({', '.join(report['reruns'])})."
                if report.get("reruns")
                else ""
            ),
            render_table(rows, columns),
            "Machines (PSNR moves between them by float rounding only; times do not carry "
            "over):\n" + "\n".join(machines),
        ]
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["cases"])
    methods = [m for m in PEERS if m != "gaussian"] + report["presets"]
    labels = {**PEERS, **{p: p for p in report["presets"]}}
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs = [k + (i - (len(methods) - 1) / 2) * width for k in range(len(names))]
        gains = [
            report["cases"][n].get(method, float("nan")) - report["cases"][n]["gaussian"]
            for n in names
        ]
        ax.bar(xs, gains, width, label=labels[method])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PSNR over the oracle Gaussian (dB)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, default=DEFAULT_OUT / "suite" / "suite.json")
    p.add_argument(
        "--preset", action="append", required=True, metavar="PRESET=REPORT_DIR:VARIANT",
        help="a preset's runs: a seed_variants.py report and its variant (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--rerun", action="append", type=Path, default=[], metavar="SUITE_JSON",
        help="a suite.py report whose peer rows replace the suite's (repeatable; first wins)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the training seed to show")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "presets-today")
    args = p.parse_args(argv)
    try:
        sources = [parse_source(text) for text in args.preset]
    except ValueError as error:
        p.error(str(error))
    missing = [str(f) for _, f, _ in sources if not (f / "seed_variants.json").exists()]
    missing += [str(f) for f in args.rerun if not f.is_file()]
    if missing:
        p.error(f"missing reports: {', '.join(missing)}")
    reruns = [json.loads(f.read_text()) for f in args.rerun]
    report = assemble(json.loads(args.suite.read_text()), sources, args.seed, reruns)
    report["reruns"] = [str(f) for f in args.rerun]
    report["command"] = command_line(__file__, argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, REPORT, report, render, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
