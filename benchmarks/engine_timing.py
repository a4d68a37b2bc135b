"""The default click's time, today's engine against an earlier one, on this machine.

A time measured on a CPU that is not here (issue 16 timed the engine of 99743bf at 203 s on
its 2-core CPU without AVX-512) carries over to today's engine by the ratio of the two
engines' times measured side by side here. Each engine runs ``nmsg denoise`` with its own
defaults on the same suite case, one run at a time, natively and with oneDNN, ATen and MKL
capped at AVX2 and float32 (an emulation that understates a real AVX2-only CPU's training
step, but treats both engines alike)::

    git worktree add /tmp/engine-99743bf 99743bf
    python benchmarks/engine_timing.py --engine 99743bf=/tmp/engine-99743bf/src \\
        --engine today=src --known 99743bf=203 --out benchmarks/results/engine-timing

Writes ``engine_timing.{json,md,png}`` to ``--out``; ``--render`` only redraws.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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
from _suite_cases import case_names, scored, simulate_case
from _table import Column, fmt, render_table

REPORT = "engine_timing"
DATA_SEED = 0
CAPS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}  # fmt: skip


def _pairs(texts: list[str], what: str, fail: Any) -> dict[str, str]:
    pairs = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            fail(f"{what} {text!r}: expected NAME=VALUE")
        pairs[name] = value
    return pairs


def _check_source(src: Path, env: dict[str, str]) -> None:
    """Fail unless ``python -m napari_nmsg`` imports the package under ``src``."""
    found = subprocess.run(
        [sys.executable, "-c", "import napari_nmsg; print(napari_nmsg.__file__)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(found).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"the package imported from {found}, not from {src}")


def run_engine(src: Path, cap: str, noisy: Path, out: Path, seed: int) -> float:
    """Seconds of one ``nmsg denoise`` run of the package under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), **CAPS[cap]}
    _check_source(src, env)
    # both engines take float32 under the cap: bfloat16 there is emulated (slow), which
    # engines older than the cap's detection would not know
    precision = ["--no-amp"] if CAPS[cap] else []
    command = [sys.executable, "-m", "napari_nmsg.cli", "denoise", str(noisy), "-o", str(out)]
    start = time.perf_counter()
    subprocess.run(
        [*command, "-q", "--seed", str(seed), *precision],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def measure(args: argparse.Namespace, engines: dict[str, str], known: dict[str, float]):
    import mrcfile
    import numpy as np

    from napari_nmsg.metrics import psnr

    data = simulate_case(args.case, DATA_SEED)
    reference = scored(data, data["target"])
    report: dict[str, Any] = {
        "machine": machine_info(),
        "command": command_line(__file__, args.argv),
        "case": args.case,
        "seed": args.seed,
        "engines": engines,
        "known": known,
        "noisy_psnr": psnr(scored(data, data["noisy"]), reference),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        noisy = Path(tmp) / f"{args.case}.mrc"
        with mrcfile.new(noisy) as mrc:
            mrc.set_data(data["noisy"].astype(np.float32))
            mrc.voxel_size = data["voxel_size"]
        for cap in args.caps.split(","):
            for name, src in engines.items():
                out = Path(tmp) / f"{name}-{cap}.mrc"
                seconds = run_engine(Path(src), cap, noisy, out, args.seed)
                result = mrcfile.read(out).astype(np.float32)
                run = {"engine": name, "cap": cap, "seconds": seconds}
                run["psnr"] = psnr(scored(data, result), reference)
                report["runs"].append(run)
                log(f"{name} ({cap}): {seconds:.1f} s, {run['psnr']:.2f} dB")
                write_report(args.out, REPORT, report, render, plot)
    return report


def scaled_times(report: dict[str, Any]) -> dict[tuple[str, str], float]:
    """Each run's time carried to the CPU of a ``known`` time, by the ratio to the engine
    that was timed there, measured under the same cap."""
    by = {(r["engine"], r["cap"]): r["seconds"] for r in report["runs"]}
    scaled = {}
    for timed, seconds in report["known"].items():
        for (engine, cap), own in by.items():
            if (timed, cap) in by:
                scaled[(engine, cap)] = seconds * own / by[(timed, cap)]
    return scaled


def render(report: dict[str, Any]) -> str:
    scaled = scaled_times(report)
    known = ", ".join(f"{name} {seconds:g} s" for name, seconds in report["known"].items())
    columns = [
        Column("engine", lambda r: r["engine"]),
        Column("source", lambda r: f"`{report['engines'][r['engine']]}`"),
        Column("instruction sets", lambda r: r["cap"]),
        Column("time here (s)", lambda r: fmt(r["seconds"], ".1f")),
        Column("PSNR (dB)", lambda r: fmt(r["psnr"])),
    ]
    if known:
        columns.append(
            Column(
                f"scaled to the known time ({known})",
                lambda r: fmt(scaled.get((r["engine"], r["cap"])), ".0f"),
            )
        )
    return "\n\n".join(
        [
            f"# `nmsg denoise` by engine: {report['case']}",
            machine_markdown(report["machine"]),
            f"Command: `{report['command']}`. Case `{report['case']}` (data seed {DATA_SEED}, "
            f"noisy {report['noisy_psnr']:.2f} dB), training seed {report['seed']}, each "
            "engine's own defaults, one run at a time; `avx2`: oneDNN, ATen and MKL capped at "
            "AVX2, float32.",
            render_table(report["runs"], columns),
        ]
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caps = list(dict.fromkeys(r["cap"] for r in report["runs"]))
    engines = list(report["engines"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(len(engines), 1)
    for i, engine in enumerate(engines):
        runs = {r["cap"]: r for r in report["runs"] if r["engine"] == engine}
        xs = [c + i * width for c, cap in enumerate(caps) if cap in runs]
        bars = ax.bar(xs, [runs[cap]["seconds"] for cap in caps if cap in runs], width,
                      label=engine)  # fmt: skip
        labels = [f"{runs[cap]['psnr']:.2f} dB" for cap in caps if cap in runs]
        ax.bar_label(bars, labels, fontsize=8)
    ax.set_xticks([c + width * (len(engines) - 1) / 2 for c in range(len(caps))], caps)
    ax.set_ylabel("nmsg denoise, seconds")
    ax.set_title(f"{report['case']}: {report['machine']['cpu_model']}", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", action="append", default=[], help="NAME=SRC (a package's src)")
    p.add_argument("--known", action="append", default=[], help="NAME=SECONDS timed elsewhere")
    p.add_argument("--case", default="vox4-crowded")
    p.add_argument("--caps", default="native,avx2", help=f"comma-separated: {', '.join(CAPS)}")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "engine-timing")
    p.add_argument("--render", action="store_true", help="only redraw from the saved JSON")
    args = p.parse_args(argv)
    args.argv = argv
    if args.render:
        report = json.loads((args.out / f"{REPORT}.json").read_text())
        write_report(args.out, REPORT, report, render, plot)
        return 0
    engines = _pairs(args.engine, "--engine", p.error)
    try:
        known = {k: float(v) for k, v in _pairs(args.known, "--known", p.error).items()}
    except ValueError as error:
        p.error(f"--known: {error}")
    if len(engines) < 2:
        p.error("give two or more --engine NAME=SRC")
    if unknown := set(known) - set(engines):
        p.error(f"--known names no --engine: {', '.join(sorted(unknown))}")
    if bad := set(args.caps.split(",")) - set(CAPS):
        p.error(f"unknown --caps: {', '.join(sorted(bad))}")
    case_names(args.case, p.error)
    measure(args, engines, known)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
