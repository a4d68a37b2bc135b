"""``gpu.md`` and ``gpu.png`` from ``gpu.json`` (``gpu.py``): the GPU's rates beside the
saved 2-core CPU suite, which ran the same cases with the same seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _common import save_figure
from _table import Column, render_table

CPU_SUITE = Path(__file__).resolve().parent / "results" / "suite" / "suite.json"
PRESET_ORDER = ("fast", "balanced", "quality")  # the engine's, without importing torch


def _machine(run: dict[str, Any]) -> str:
    m = run["machine"]
    gpu = (
        f"{m['gpu']} ({m['gpu_memory_gb']} GiB, CUDA {m['cuda']}, cuDNN {m['cudnn']})"
        if m.get("gpu")
        else "no GPU"
    )
    return (
        f"- `{run['command']}`: {gpu}; host {m['cpu_model']}, {m['cpu_cores']} cores; "
        f"torch {m['torch']}, Python {m['python']}; napari-nmsg at {m['git']}"
    )


def _cpu_suite() -> dict[str, Any]:
    return json.loads(CPU_SUITE.read_text())["cases"] if CPU_SUITE.exists() else {}


def render(report: dict[str, Any]) -> str:
    parts = ["# GPU benchmark\n", "Runs:\n", *(_machine(r) for r in report["runs"]), ""]
    if "smoke" in report:
        parts += [
            "## Smoke: the pipeline's GPU paths on a 48³ volume\n",
            render_table(
                report["smoke"].items(),
                [Column("step", lambda r: r[0]), Column("result", lambda r: r[1][:200])],
            ),
            "",
        ]
    if report.get("kernels"):
        parts += [
            "## U-Net inference on tiles already on the GPU\n",
            "Mvox/s of output; error: std of the difference from float32 (TF32 off) over "
            "the std of the network's correction (output minus its Gaussian base).\n",
            render_table(
                report["kernels"],
                [
                    Column("preset", lambda r: r["preset"]),
                    Column("batch × tile³", lambda r: f"{r['batch']} × {r['tile']}³"),
                    Column("variant", lambda r: r["variant"]),
                    Column("Mvox/s", lambda r: r["mvox_s"], ".0f"),
                    Column("ms per batch", lambda r: r["ms"], ".2f"),
                    Column("error", lambda r: r.get("relative_error"), ".1e"),
                    Column("compile s", lambda r: r.get("compile_s"), ".0f"),
                ],
            ),
            "",
        ]
    if report.get("train"):
        parts += [
            "## Training steps (300 steps on real pairs of the 4 Å case)\n",
            render_table(
                report["train"],
                [
                    Column("preset", lambda r: r["preset"]),
                    Column(
                        "width / crop / batch",
                        lambda r: f"{r['width']} / {r['crop']}³ / {r['batch']}",
                    ),
                    Column("TF32", lambda r: "on" if r["tf32"] else "off"),
                    Column("ms per step", lambda r: r["step_ms"], ".2f"),
                    Column("of which drawing pairs", lambda r: r["pairs_ms"], ".2f"),
                ],
            ),
            "",
        ]
    if report.get("big"):
        big = report["big"]
        shape = " × ".join(str(n) for n in big["shape"])
        rows = [{"preset": k, **v} for k, v in big.items() if k != "shape"]
        parts += [
            f"## One {shape} (Z × Y × X) tomogram, MRC to MRC\n",
            render_table(
                rows,
                [
                    *_stage_columns(),
                    Column("denoise Mvox/s", lambda r: r["mvox_s"], ".0f"),
                    Column("GPU peak GiB", lambda r: r["gpu_peak_gb"], ".1f"),
                ],
            ),
            "",
        ]
    if report.get("suite"):
        parts += ["## Suite cases (128³ unless said), seed 0\n", _suite_table(report["suite"]), ""]
    if report.get("errors"):
        errors = report["errors"].items()
        parts += ["## Errors\n", *(f"- {k}: `{v.splitlines()[-1]}`" for k, v in errors), ""]
    return "\n".join(parts) + "\n"


def _stage_columns() -> list[Column]:
    return [
        Column("preset", lambda r: r["preset"]),
        Column("learn s", lambda r: r["learn_s"], ".1f"),
        Column("train s", lambda r: r["train_s"], ".1f"),
        Column("judge s", lambda r: r["judge_s"], ".1f"),
        Column("denoise s", lambda r: r["denoise_s"], ".1f"),
        Column("total s", lambda r: r["total_s"], ".1f"),
    ]


def _suite_table(suite: dict[str, Any]) -> str:
    cpu = _cpu_suite()

    def cpu_value(name: str, method: str, key: str) -> Any:
        return cpu.get(name, {}).get("methods", {}).get(method, {}).get(key)

    rows = [
        {"case": name, "role": case["role"], "preset": preset, **case[preset]}
        for name, case in suite.items()
        for preset in PRESET_ORDER
        if preset in case
    ]
    columns = [
        Column("case", lambda r: r["case"]),
        Column("role", lambda r: r["role"]),
        *_stage_columns(),
        Column("PSNR dB", lambda r: r["psnr"], ".2f"),
        Column("estimated gain dB", lambda r: r["estimated_gain_db"], "+.2f"),
        Column("2-core CPU PSNR / s", lambda r: _cpu_cell(cpu_value, r)),
        Column("oracle Gaussian dB", lambda r: cpu_value(r["case"], "gaussian", "psnr"), ".2f"),
        Column("GPU peak GiB", lambda r: r["gpu_peak_gb"], ".2f"),
    ]
    return render_table(rows, columns)


def _cpu_cell(cpu_value, row: dict[str, Any]) -> str:
    psnr = cpu_value(row["case"], row["preset"], "psnr")
    seconds = cpu_value(row["case"], row["preset"], "seconds")
    return "" if psnr is None else f"{psnr:.2f} / {seconds:.0f}"


def plot(report: dict[str, Any], path: Path) -> None:
    """Left: inference rate per variant (fast and quality U-Nets, largest batch of 64³
    tiles), or where no kernels were timed, each suite run's PSNR over the oracle Gaussian.
    Right: each suite run's seconds by stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if report.get("kernels"):
        _plot_kernels(left, report["kernels"])
    else:
        _plot_gain(left, report.get("suite", {}))
    runs = [(f"{n} {p}", c[p]) for n, c in report.get("suite", {}).items()
            for p in PRESET_ORDER if p in c]  # fmt: skip
    bottom = [0.0] * len(runs)
    for stage in ("learn_s", "train_s", "judge_s", "denoise_s"):
        values = [r[stage] for _, r in runs]
        right.barh(range(len(runs)), values, left=bottom, label=stage.removesuffix("_s"))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set_yticks(range(len(runs)), [n for n, _ in runs], fontsize=6)
    right.set_xlabel("seconds per 128³ run (learn + fit + denoise)")
    right.legend(fontsize=8)
    gpu = report["runs"][-1]["machine"].get("gpu") or "CPU"
    fig.suptitle(f"napari-nmsg on {gpu}", fontsize=10)
    save_figure(fig, path, dpi=110)


def _plot_kernels(ax, kernels: list[dict[str, Any]]) -> None:
    kernels = [r for r in kernels if (r["batch"], r["tile"]) == (8, 64)]
    variants = list(dict.fromkeys(r["variant"] for r in kernels))
    for i, preset in enumerate(("fast", "quality")):
        rate = {r["variant"]: r["mvox_s"] for r in kernels if r["preset"] == preset}
        ax.barh([j + 0.4 * i for j in range(len(variants))],
                [rate.get(v, 0) for v in variants], 0.4, label=preset)  # fmt: skip
    ax.set_yticks([j + 0.2 for j in range(len(variants))], variants, fontsize=7)
    ax.set_xlabel("Mvox/s (8 tiles of 64³ on the GPU)")
    ax.legend(fontsize=8)


def _plot_gain(ax, suite: dict[str, Any]) -> None:
    cpu = _cpu_suite()
    names = [n for n in suite if "psnr" in cpu.get(n, {}).get("methods", {}).get("gaussian", {})]
    presets = [p for p in PRESET_ORDER if any(p in suite[n] for n in names)]
    height = 0.8 / max(len(presets), 1)
    gaussian = [cpu[n]["methods"]["gaussian"]["psnr"] for n in names]
    for i, preset in enumerate(presets):
        gains = [suite[n][preset]["psnr"] - g if preset in suite[n] else 0.0
                 for n, g in zip(names, gaussian, strict=True)]  # fmt: skip
        ax.barh([j + height * i for j in range(len(names))], gains, height, label=preset)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))], names, fontsize=7)
    ax.set_xlabel("PSNR over the oracle Gaussian (dB), seed 0")
    ax.legend(fontsize=8)
