"""``quality.md`` and ``quality.json`` of the quality benchmark (``run.py``).

``render_markdown`` needs only the report's JSON, so committed results can be re-rendered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine_markdown, write_json
from _table import NA, Column, render_table

Row = dict[str, Any]


def write_reports(report: dict[str, Any], out: Path) -> None:
    """Rewrite both files; called after every method so that a partial run is kept."""
    report["end_load_avg"] = [round(v, 2) for v in os.getloadavg()]
    report["elapsed_s"] = time.perf_counter() - report["_t0"]
    write_json(out / "quality.json", {k: v for k, v in report.items() if not k.startswith("_")})
    (out / "quality.md").write_text(render_markdown(report))


def total_s(row: Row) -> float:
    """A row's noise + fit + inference seconds (its `total s` cell)."""
    return row.get("noise_s", 0) + row.get("fit_s", 0) + row.get("infer_s", 0)


# ------------------------------------------------------------------ methods table


def _if_ok(value: Callable[[Row], Any]) -> Callable[[Row], Any]:
    """A failed row shows FAILED and its error; its other cells stay empty."""
    return lambda row: value(row) if row.get("ok") else ""


def _resolution(row: Row, key: str) -> str:
    value = row.get(f"fsc_{key}_A")
    if value is None:
        return NA
    return ("≤" if row.get(f"fsc_{key}_at_nyquist") else "") + f"{value:.0f}"


def _peak_rss(row: Row) -> str:
    rss = row.get("peak_rss_mb")
    return f"{rss:.0f} (Δ {rss - row.get('baseline_rss_mb', 0):.0f})" if rss else NA


def _times(row: Row) -> str:
    return f"{row.get('noise_s', 0):.1f} / {row.get('fit_s', 0):.0f} / {row.get('infer_s', 0):.1f}"


def _notes(row: Row) -> str:
    if not row.get("ok"):
        return row.get("error", "")[:160]
    notes = []
    if row.get("parameter"):
        notes.append(row["parameter"])
    if row.get("search_s"):
        notes.append(f"oracle search {row['search_s']:.1f}s")
    if row.get("noise_in_fit"):
        notes.append("noise learned inside fit")
    budget = row.get("budget", {})
    if budget.get("gan_steps") and not row["id"].startswith(("n2n", "sup")):
        notes.append(f"GAN {budget['gan_steps']} steps")
    if row["id"].startswith("preset"):
        notes.append(budget["unet"] + f", crop {budget['crop']}")
    return "; ".join(notes)


def _method_columns(noisy_psnr: float | None) -> list[Column]:
    def gain(row: Row) -> float | None:
        return row["psnr"] - noisy_psnr if noisy_psnr is not None else None

    return [
        Column("id", lambda r: f"`{r['id']}`"),
        Column("method", lambda r: r["label"]),
        Column("PSNR dB", lambda r: r["psnr"] if r.get("ok") else "FAILED", ".2f"),
        Column("Δ noisy", _if_ok(gain), ".2f"),
        Column("SSIM", _if_ok(lambda r: r["ssim"]), ".3f"),
        Column("r", _if_ok(lambda r: r["pearson"]), ".3f"),
        Column("FSC 0.5 Å", _if_ok(lambda r: _resolution(r, "0.5"))),
        Column("FSC 0.143 Å", _if_ok(lambda r: _resolution(r, "0.143"))),
        Column("steps", _if_ok(lambda r: r.get("budget", {}).get("train_steps") or None)),
        Column("noise / fit / infer s", _if_ok(_times)),
        Column("total s", _if_ok(total_s), ".0f"),
        Column("peak RSS MB", _if_ok(_peak_rss)),
        Column("notes", _notes),
    ]


# ------------------------------------------------------------------ seams and noise models

SEAM_LABELS = {
    "blended": "tiled, blended (as shipped)",
    "overlap0": "control: tiled, overlap 0 (no blending)",
    "untiled": "control: whole volume in one tile (no seams possible)",
}
SEAM_COLUMNS = [
    Column("inference", lambda s: SEAM_LABELS[s["key"]]),
    Column("tile", lambda s: s["tile"] if s["key"] != "untiled" else NA),
    Column("overlap", lambda s: s["overlap"] if s["key"] != "untiled" else NA),
    Column("border / beside error", lambda s: s["ratio"], ".3f"),
    Column(
        "per axis", lambda s: ", ".join(f"{a}: {v['ratio']:.3f}" for a, v in s["per_axis"].items())
    ),
    Column("RMS(tiled − untiled) / RMS error", lambda s: s.get("tiling_rms_over_error_rms"), ".3f"),
    Column("PSNR dB", lambda s: s["psnr"], ".2f"),
]


def _fidelity(key: str) -> Callable[[Row], Any]:
    return lambda row: row["f"][key] if "f" in row else ""


def _beside_reference(key: str) -> Callable[[Row], str]:
    """The generated noise's statistic with the reference's in brackets."""
    return lambda row: f"{row['f'][key]:.3f} ({row['f'][key + '_real']:.3f})" if "f" in row else ""


FIDELITY_COLUMNS = [
    Column("model", lambda r: r["model"]),
    Column("measured against", lambda r: r["ref"]),
    Column("log-PSD err", lambda r: r["f"]["log_psd_error"] if "f" in r else r["error"], ".3f"),
    Column("hist err", _fidelity("hist_error"), ".4f"),
    Column("var ratio", _fidelity("variance_ratio"), ".3f"),
    Column("kurtosis (ref)", _beside_reference("kurtosis")),
    Column("axial AC lag 1 (ref)", _beside_reference("axial_autocorr")),
    Column("AC err", _fidelity("autocorr_error"), ".3f"),
    Column("learn s", lambda r: r.get("learn_s", ""), ".0f"),
]


def _fidelity_rows(noise: dict[str, Any]) -> list[Row]:
    """One row per (model, reference): each model against its held-out patches and against
    the true noise; the extracted patches (the same for every model) only once."""
    rows: dict[tuple[str, str], Row] = {}
    for kind, res in noise.items():
        if not res.get("ok"):
            failed = {"model": kind, "ref": "FAILED", "error": res.get("error", "")[:120]}
            rows.setdefault((kind, "FAILED"), failed)
            continue
        for ref, table in (
            ("held-out real patches", res["fidelity_held_out"]),
            ("TRUE noise (noisy − target)", res["fidelity_true"]),
        ):
            for model, f in table.items():
                if ref.startswith("held") and model != kind:
                    continue
                learn = res["noise_s"] if model == kind else None
                row = {"model": model, "ref": ref, "f": f, "learn_s": learn}
                rows.setdefault((model, ref), row)
    return list(rows.values())


# ------------------------------------------------------------------ the document


def _header(report: dict[str, Any]) -> list[str]:
    b = report["budget"]
    lines = [
        "# NMSG quality benchmark",
        "",
        f"Mode `{report['mode']}`; command `{report['command']}`; "
        f"total {report['elapsed_s'] / 60:.1f} min.",
        "",
        machine_markdown(report["machine"], report["end_load_avg"]),
        "",
        f"**Budget (same for every network row unless its `steps` cell says otherwise):** "
        f"{b['train_steps']} training steps × batch {b['batch']} × {b['crop']}³ crops, U-Net "
        f"{b['unet']}, Adam lr {b['lr']} with cosine decay, EMA weights; GAN noise model "
        f"{b['gan_steps']} steps; preset `{report['preset']}`"
        + (f", overrides {report['overrides']}" if report["overrides"] else "")
        + ". Preset rows scale their own step counts by the same factor as this run "
        f"({b['train_steps']} / the `{report['preset']}` preset's {b['preset_train_steps']}).",
        "",
        "PSNR: dB over the target's range after the best affine intensity fit; SSIM: 3D, on the "
        "affine-fitted estimate, data range of the target; r: Pearson; FSC: against the "
        "noiseless target (same wedge and CTF), resolution in Å where it first drops below "
        "0.5 / 0.143 (≤ means it never did, up to Nyquist; against a noise-free reference "
        "0.5 is the meaningful threshold). Times: `noise` = learning the noise model (shared "
        "by the NMSG rows that use it; counted in each row's total), `fit` = training, `infer` "
        "= tiled inference of the whole volume; time for oracle parameter searches is not "
        "counted. Peak RSS: each method ran in a fresh process; peak = that process's own "
        "high-water mark (`VmHWM`; `ru_maxrss` is not used because Linux carries the "
        "parent's peak over fork + exec), Δ = peak minus the peak after importing torch + "
        "napari_nmsg and loading the volumes.",
    ]
    if report["mode"] == "quick":
        lines += [
            "",
            "> **Quick mode**: step budgets are a small fraction of the presets' (fast: "
            f"{b['preset_train_steps']} steps, {b['preset_gan_steps']} GAN steps), so the "
            "network rows are far from converged. The quick run checks the whole harness "
            "end to end; compare methods with `--full` (or `--steps 300`).",
        ]
    return lines


SEAM_NOTE = (
    "Mean |denoised − target| (affine-fitted) on the two voxel layers at each tile "
    "border inside the volume (planes of the shipped tiling), divided by the mean on "
    "the layers 2–4 voxels beside them. Target ≤ 1.0; the untiled row is the same "
    "ratio where no tiles exist, i.e. what the data alone give at those planes, and "
    "the overlap-0 row shows what an unblended seam looks like. `RMS(tiled − "
    "untiled) / RMS error`: how much tiling changes the output, relative to the "
    "remaining error against the target."
)
FIDELITY_NOTE = (
    "Errors are 0 for a perfect match: RMS log10 power-spectrum ratio, Wasserstein-1 "
    "histogram distance over the reference std, generated/reference variance, excess "
    "kurtosis, lag-1 autocorrelation along the beam axis, largest autocorrelation "
    "difference (lags 1–3 axial, 1 in plane). `extracted patches` rows measure the "
    "background patches the models are learned from against the true noise. "
)


def _case_section(case: str, entry: dict[str, Any]) -> list[str]:
    lines = ["", f"## Case `{case}`: {entry['description']}", ""]
    lines += [
        f"Voxel size {entry['voxel_size_A']:.0f} Å; simulation {entry['simulate_s']:.1f} s.",
        "",
    ]
    methods = entry["methods"]
    rows = [{"id": name, **row} for name, row in methods.items()]
    lines.append(render_table(rows, _method_columns(methods.get("noisy", {}).get("psnr"))))
    seam = methods.get("nmsg", {}).get("seam")
    if seam:
        seam_rows = [{"key": key, **seam[key]} for key in SEAM_LABELS if seam.get(key)]
        lines += ["", "### Tile seams (NMSG default output)", ""]
        lines += [render_table(seam_rows, SEAM_COLUMNS), "", SEAM_NOTE]
    if entry["noise"]:
        lines += ["", "### Noise-model fidelity", ""]
        lines.append(render_table(_fidelity_rows(entry["noise"]), FIDELITY_COLUMNS))
        notes = {k: v.get("note") for k, v in entry["noise"].items() if v.get("ok")}
        lines += ["", FIDELITY_NOTE + f"Patches: {next(iter(notes.values()), '')}."]
    figs = entry.get("figures", {})
    if figs:
        lines += ["", "Figures: " + ", ".join(f"[{k}]({v})" for k, v in figs.items()), ""]
        if "slices" in figs:
            lines.append(f"![slices]({figs['slices']})")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    lines = _header(report)
    for case, entry in report["cases"].items():
        lines += _case_section(case, entry)
    lines.append("")
    return "\n".join(lines)
