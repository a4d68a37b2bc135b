"""``speed.md`` of the speed benchmark (``speed.py``), rendered from its JSON report."""

from __future__ import annotations

from typing import Any

from _common import machine_markdown
from _table import Column, render_table


def _load(r: dict[str, Any]) -> float:
    return r["load_1min_at_start"]


def _peak_anon(r: dict[str, Any]) -> float:
    return r["peak_anon_mb"]


def _preset_budget(r: dict[str, Any]) -> str:
    return f"{r['preset_train_steps']} steps ≈ {r['step_s'] * r['preset_train_steps'] / 60:.0f} min"


def _tiling(r: dict[str, Any]) -> str:
    inf = r["inference"]
    return f"{inf['tile']} / {inf['overlap']} / {inf['tile_batch']}"


PRESET_COLUMNS = [
    Column("preset", lambda r: r["name"]),
    Column("U-Net", lambda r: r["unet"]),
    Column("batch × crop", lambda r: f"{r['batch']} × {r['crop']}³"),
    Column("s / step", lambda r: r["step_s"], ".2f"),
    Column("steps / s", lambda r: r["steps_per_s"], ".3f"),
    Column("train Mvox/s", lambda r: r["train_mvox_per_s"], ".3f"),
    Column("preset budget (est. on this machine)", _preset_budget),
    Column("setup s", lambda r: r["setup_s"], ".1f"),
    Column("inference Mvox/s", lambda r: r["inference"]["mvox_per_s"], ".3f"),
    Column(
        "± pairs (precision)",
        lambda r: f"{r['inference']['inference_pairs']} ({r['inference']['precision']})",
    ),
    Column("tile / overlap / batch", _tiling),
    Column("peak anon RSS MB", lambda r: r["inference"]["peak_anon_mb"], ".0f"),
    Column("load", _load, ".1f"),
]
TILE = Column("tile", lambda r: r["tile"])
OVERLAP = Column("overlap", lambda r: r["overlap"])
PRECISION = Column("precision", lambda r: r["precision"])
COLD = Column("cold s", lambda r: r["cold_seconds"], ".1f")
SECONDS_1 = Column("s", lambda r: r["seconds"], ".1f")
SECONDS_2 = Column("s", lambda r: r["seconds"], ".2f")
MVOX = Column("Mvox/s", lambda r: r["mvox_per_s"], ".3f")
PSNR = Column("PSNR dB", lambda r: r["psnr"], ".3f")
PEAK = Column("peak anon RSS MB", _peak_anon, ".0f")
LOAD = Column("load", _load, ".1f")
AMP_COLUMNS = [TILE, OVERLAP, PRECISION, COLD, SECONDS_2, MVOX, PSNR, LOAD]
PAIRS_COLUMNS = [
    Column("± pairs", lambda r: r["inference_pairs"]),
    Column("passes", lambda r: 2 * r["inference_pairs"] or 1),
    *(PRECISION, SECONDS_2, MVOX, PSNR, LOAD),
]
TILES_COLUMNS = [
    TILE,
    OVERLAP,
    Column("tiles", lambda r: r["tiles"]),
    Column("voxels processed / volume", lambda r: r["processed_voxel_factor"], ".2f"),
    *(COLD, SECONDS_1, MVOX, PEAK, LOAD),
]
BATCH_COLUMNS = [Column("tile batch", lambda r: r["tile_batch"]), COLD, SECONDS_1, MVOX, PEAK, LOAD]
THREADS_COLUMNS = [
    Column("threads", lambda r: r["threads"]),
    Column("s / step", lambda r: r["step_s"], ".2f"),
    Column("steps / s", lambda r: r["steps_per_s"], ".3f"),
    Column("inference Mvox/s", lambda r: r["inference"]["mvox_per_s"], ".3f"),
    LOAD,
]


def _gan_section(g: dict[str, Any]) -> list[str]:
    clean = g["step_s_without_snapshot"]
    step_s = clean or g["mean_step_s"]
    return [
        "",
        "## GAN noise model",
        "",
        f"{g['gan_steps']} WGAN-GP steps (5 critic steps + 1 generator step each) took "
        f"{g['total_s']:.1f} s including patch extraction: {g['mean_step_s']:.2f} s per "
        "step on average, with a held-out fidelity snapshot every "
        f"{g['snapshot_every']} step(s)"
        + (f"; {clean:.2f} s per step without a snapshot" if clean else "")
        + ". At that rate the presets' GAN budgets ("
        + ", ".join(f"{k} {v}" for k, v in g["preset_gan_steps"].items())
        + " steps) take about "
        + ", ".join(f"{v * step_s / 60:.0f} min" for v in g["preset_gan_steps"].values())
        + ".",
    ]


PRESETS_NOTE = (
    "`setup s`: from the start of the fit to the first training step (local noise "
    "amplitude map etc.). `train Mvox/s`: crop voxels through forward + backward per "
    "second. Inference runs each preset's defaults: `± pairs` recorrupted pairs "
    "averaged (2 network passes each; 0 = one pass f(y)) and automatic mixed "
    "precision. Inference Mvox/s counts each input voxel once (overlapping tiles process "
    "more); each setting runs twice and the second (warm) run is timed: the first use "
    "of new tensor shapes pays a one-off set-up (`cold s` in the tables below). Peak "
    "anon RSS: sampled every 20 ms during the warm run, whole process (includes torch "
    "and the volume; the allocator may keep memory from earlier runs). `load`: the "
    "1-minute load average when the measurement started (2 cores: above ~2 the "
    "machine was shared and that row is slower than the machine can do)."
)
AMP_NOTE = (
    "PSNR of the denoised volume against the simulation's noiseless target: mixed "
    "precision rounds only the predicted correction (it is added to the float32 "
    "input). The speed-up needs native bfloat16 in the CPU (AMX or AVX512-BF16); "
    "without it autocast may be slower, which is why the default (`amp` auto) turns "
    "it on only for CUDA and for CPUs with native bfloat16."
)
PAIRS_NOTE = (
    "The network was trained on y + αz; the mean of f(y + αz) and f(y − αz) over fresh "
    "z (pair k under the k-th in-plane symmetry) estimates the denoised volume better "
    "than one pass f(y), at 2 passes per pair. Each preset's count: `± pairs` in the "
    "presets table."
)
THREADS_NOTE = (
    "Interleaved 1, 2, 1, 2 so that a change of load hits both settings. On cores "
    "shared with other busy processes, two torch threads can be much slower than one "
    "(threads wait for each other at every parallel region); on an idle machine two "
    "are faster."
)


def render(report: dict[str, Any], mvox: float) -> str:
    s = report["settings"]
    lines = [
        "# NMSG speed benchmark",
        "",
        f"Mode `{report['mode']}`: simulated volume {'×'.join(map(str, s['shape']))} "
        f"({mvox:.2f} Mvox), {s['steps']} timed training steps after {s['warmup']} warm-up "
        f"(median step time); device cpu. Total {report['elapsed_s'] / 60:.1f} min.",
        "",
        machine_markdown(report["machine"], report.get("end_load_avg")),
    ]
    if report.get("presets"):
        rows = [{"name": name, **r} for name, r in report["presets"].items()]
        lines += ["", "## Presets: training and inference", ""]
        lines += [render_table(rows, PRESET_COLUMNS), "", PRESETS_NOTE]
    if report.get("amp"):
        lines += [
            "",
            "## Mixed-precision inference (`amp`, fast U-Net trained "
            f"{s.get('amp_steps', '?')} steps, one pass f(y))",
            "",
            render_table(report["amp"], AMP_COLUMNS),
            "",
            AMP_NOTE,
        ]
    if report.get("pairs"):
        lines += [
            "",
            "## Averaged recorrupted pairs at inference (same network, default tiles)",
            "",
            render_table(report["pairs"], PAIRS_COLUMNS),
            "",
            PAIRS_NOTE,
        ]
    if report.get("gan"):
        lines += _gan_section(report["gan"])
    if report.get("tiles"):
        lines += ["", "## Inference: tile size × overlap (fast preset U-Net, tile batch 2)", ""]
        lines.append(render_table(report["tiles"], TILES_COLUMNS))
    if report.get("batch"):
        lines += ["", "## Inference: tile batch (tile 48, overlap 16)", ""]
        lines.append(render_table(report["batch"], BATCH_COLUMNS))
    if report.get("threads"):
        lines += ["", "## torch CPU threads (fast preset)", ""]
        lines += [render_table(report["threads"], THREADS_COLUMNS), "", THREADS_NOTE]
    lines.append("")
    return "\n".join(lines)
