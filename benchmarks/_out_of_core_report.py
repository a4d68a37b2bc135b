"""``out_of_core.md`` of the out-of-core benchmark (``out_of_core.py``), rendered from its
JSON report.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from _common import machine_markdown
from _table import Column, render_table

EQUALITY_COLUMNS = [
    Column("U-Net", lambda r: r["net"]),
    Column("volume", lambda r: "×".join(map(str, r["shape"]))),
    Column("max abs diff", lambda r: r["max_abs_diff"], ".3g"),
    Column("max rel diff", lambda r: r["max_rel_diff"], ".2g"),
    Column("equal (rtol 1e-5)", lambda r: "yes" if r["equal"] else "**NO**"),
    Column("mean change / input std", lambda r: r["output_vs_input_change"], ".3f"),
    Column("in-memory s", lambda r: r["in_memory_s"], ".1f"),
    Column("out-of-core s", lambda r: r["out_of_core_s"], ".1f"),
]
EQUALITY_NOTE = (
    "Input written as MRC, read memory-mapped by `napari_nmsg.io.read_volume`, denoised "
    "by `iter_denoise` into `napari_nmsg.io.mrc_output`, read back, and compared with "
    "`iter_denoise` on the in-memory array. `mean change` shows the network is not the "
    "identity."
)
MEMORY_NOTE = (
    "The peak RSS (`VmHWM`, like `ru_maxrss`) counts every resident page, "
    "including pages of the memory-mapped input and output files. The engine "
    "drops its mapped pages after each row of tiles (`MADV_DONTNEED`; the data "
    "stays in the page cache), so the file-backed part stays near one row of "
    "tiles instead of growing to the file sizes. The anonymous part (torch, the "
    "Z-row accumulator, temporaries) is what the process must hold."
)


def _memory_rows(report: dict[str, Any], big: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, against the limit) of the big run, with the engine's own buffers
    estimated from the volume's shape."""
    limit = report["limit_mb"]
    planes = report["shape"][1] * report["shape"][2]
    tile = min(report["tile"], min(report["shape"]))
    row_buffer = tile * planes * 4 / 2**20
    chunk = max(1, 64 * 2**20 // (planes * 4)) * planes * 4  # the engine's flush chunk
    flush = (2 * chunk + planes * 4) / 2**20

    def verdict(mb: float) -> str:
        return "yes" if mb <= limit else "**no**"

    out, inp = big["output_mean_std"], big["input_mean_std"]
    return [
        ("generate input (slab by slab)", f"{report.get('write_s', 0):.0f} s", ""),
        ("denoise wall time", f"{big['seconds']:.0f} s", ""),
        ("  of which to the first tile batch", f"{big['to_first_tile_s']:.0f} s", ""),
        ("throughput", f"{big['mvox_per_s']:.2f} Mvox/s", ""),
        (
            "peak RSS, `VmHWM` (incl. mapped file pages)",
            f"{big['peak_rss_mb']:.0f} MB",
            verdict(big["peak_rss_mb"]),
        ),
        (
            "peak anonymous RSS (sampled every 50 ms)",
            f"{big['peak_anon_mb']:.0f} MB",
            verdict(big["peak_anon_mb"]),
        ),
        ("peak file-backed RSS (sampled)", f"{big['peak_file_mb']:.0f} MB", ""),
        ("RSS after imports + model", f"{big['baseline_rss_mb']:.0f} MB", ""),
        ("engine's Z-row accumulator (tile × Y × X × 4 B)", f"{row_buffer:.0f} MB", "estimated"),
        (
            "flush temporaries (2 × 64 MB chunks + the Y × X weight plane)",
            f"{flush:.0f} MB",
            "estimated",
        ),
        (
            "output finite / mean, std (3 planes) vs input",
            f"{big['output_finite']} / {out[0]:.2f}, {out[1]:.2f} vs {inp[0]:.2f}, {inp[1]:.2f}",
            "",
        ),
    ]


def render(report: dict[str, Any]) -> str:
    shape = "×".join(map(str, report["shape"]))
    net = report["net"]
    lines = [
        "# NMSG out-of-core benchmark",
        "",
        machine_markdown(report["machine"], report.get("end_load_avg")),
        "",
        f"Total {report.get('elapsed_s', 0) / 60:.1f} min. Random-initialised networks with a "
        "non-zero output layer (the point is memory and correctness, not denoising); the big "
        f"run uses the engine's UNet3D at depth {net['depth']}, width {net['width']} (the "
        "fast preset's is depth 2, width 8) in "
        f"{report.get('big', {}).get('precision', 'float32')}, "
        f"tile {report['tile']}, overlap {report['overlap']}, tile batch 2, CPU.",
    ]
    if report.get("equality"):
        lines += ["", "## Out-of-core equals in-memory", ""]
        lines += [render_table(report["equality"], EQUALITY_COLUMNS), "", EQUALITY_NOTE]
    big = report.get("big")
    if big:
        lines += ["", f"## {shape} float32 ({report['size_gib']} GiB) MRC", ""]
        if not big.get("ok"):
            lines.append(f"FAILED: {big.get('error')}")
        else:
            columns = [
                Column("measure", itemgetter(0)),
                Column("value", itemgetter(1)),
                Column(f"≤ {report['limit_mb']} MB?", itemgetter(2)),
            ]
            lines += [render_table(_memory_rows(report, big), columns), "", MEMORY_NOTE]
    lines.append("")
    return "\n".join(lines)
