"""Quality benchmark: NMSG, its ablations and reference methods on simulated tomograms.

One command runs every method side by side on the same simulated volumes (ground truth
known) and writes ``quality.md``, ``quality.json`` and PNG figures to ``--out``::

    python benchmarks/run.py --quick      # one 96³ case, reduced steps (~10 min on 2 cores)
    python benchmarks/run.py --full       # four 128³ cases, preset budgets (hours on CPU)
    python benchmarks/run.py --quick --methods noisy,gaussian,nmsg --steps 50

Each method runs in a fresh Python process (so its peak RSS is its own) and is wrapped so
that a failure becomes a row in the table, not the end of the run. Every network method of
one run trains with the same step budget, crop, batch and U-Net; the table header says which.
This file is the command line and the workers' entry; ``_cases``, ``_harness``,
``_workers``, ``_metrics`` and ``_report`` do the work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import BY_NAME, CASES, FULL, QUICK, default_methods, unet_description
from _common import DEFAULT_OUT, command_line, log, machine_info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one 96³ case, reduced steps (default)")
    mode.add_argument("--full", action="store_true", help="four 128³ cases, the preset's budget")
    p.add_argument("--cases", help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--methods", help=f"comma-separated, from {', '.join(BY_NAME)}")
    p.add_argument("--preset", default="fast", help="preset under test (default fast)")
    p.add_argument(
        "--steps", type=int, help=f"training steps of every network (quick: {QUICK['steps']})"
    )
    p.add_argument(
        "--gan-steps", type=int, help=f"GAN noise-model steps (quick: {QUICK['gan_steps']})"
    )
    p.add_argument(
        "--curve-points",
        type=int,
        help=f"checkpoints for PSNR vs time (quick: {QUICK['curve_points']})",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any NMSGConfig field for all network rows, e.g. --set crop=32",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method-timeout", type=float, help="seconds before a method is killed")
    p.add_argument("--in-process", action="store_true", help="no subprocesses (RSS then shared)")
    p.add_argument("--keep-work", action="store_true", help="keep the volumes of every method")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        return args
    args.full = bool(args.full)
    defaults = FULL if args.full else QUICK
    args.case_list = args.cases.split(",") if args.cases else list(defaults["cases"])
    unknown = [c for c in args.case_list if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    args.methods_given = bool(args.methods)
    if args.steps is None:
        args.steps = defaults.get("steps")
    if args.gan_steps is None:
        args.gan_steps = defaults.get("gan_steps")
    if args.curve_points is None:
        args.curve_points = defaults["curve_points"]
    return args


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def new_report(args: argparse.Namespace, argv: list[str] | None, base: Any, sets: dict) -> dict:
    """The report before any case: the run's settings, budget and machine."""
    from napari_nmsg.engine import NMSGConfig

    reference = NMSGConfig.preset(args.preset)
    report: dict[str, Any] = {
        "_t0": time.perf_counter(),
        "mode": "full" if args.full else "quick",
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "preset": args.preset,
        "overrides": sets,
        "budget": {
            "train_steps": base.train_steps,
            "gan_steps": base.gan_steps,
            "batch": base.batch_size,
            "crop": base.crop,
            "lr": base.lr,
            "unet": unet_description(base),
            "preset_train_steps": reference.train_steps,
            "preset_gan_steps": reference.gan_steps,
        },
        "config": base.to_dict(),
        "methods": args.method_list,
        "cases": {},
    }
    if args.threads:
        report["machine"]["torch_threads"] = args.threads
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:  # a fresh process started by _common.run_worker for one method
        from _workers import worker_main

        return worker_main(args._worker)
    from _harness import Runner
    from _report import write_reports
    from napari_nmsg.engine import NMSGConfig

    sets = _parse_sets(args.set)
    base = NMSGConfig.preset(
        args.preset,
        **sets,
        device=args.device,
        seed=args.seed,
        train_steps=args.steps,
        gan_steps=args.gan_steps,
    )
    args.method_list = (
        args.methods.split(",")
        if args.methods
        else default_methods(args.preset, base.noise_model, args.full)
    )
    unknown = [m for m in args.method_list if m not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(BY_NAME)}")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    report = new_report(args, argv, base, sets)
    work = Path(tempfile.mkdtemp(prefix="nmsg-bench-"))
    runner = Runner(args, work, Path(__file__).resolve(), report, base, sets)
    log(
        f"methods: {', '.join(args.method_list)}; cases: {', '.join(args.case_list)}; "
        f"{base.train_steps} steps, {base.gan_steps} GAN steps; work folder {work}"
    )
    try:
        for case in args.case_list:
            runner.run_case(case)
    finally:
        write_reports(report, args.out)
        if args.keep_work:
            log(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [
        f"{case}/{name}"
        for case, entry in report["cases"].items()
        for name, row in entry["methods"].items()
        if not row.get("ok")
    ]
    log(
        f"done in {report['elapsed_s'] / 60:.1f} min; wrote {args.out / 'quality.md'}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
