"""What made an output, recorded with it: as much as fits in its MRC labels, all of it in
its sidecar ``<output>.nmsg.json`` and, for OME-Zarr, in the store's attributes.

The record names the package version, the input (file name, BLAKE2b checksum, OME-Zarr
level), the settings the output was denoised with (all, and apart those that differ from
the default preset), the seed, the noise model and its fidelity, the self-supervised
quality estimate and where the voxel size came from. The engine (torch) is imported only
when a record is built, which needs a model anyway.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .engine import NMSGConfig, NMSGModel

ATTRS_KEY = "napari-nmsg"  # the OME-Zarr attribute that holds the record
# of an MRC header's ten 80-character labels, mrcfile writes its "Created by" label first
MRC_LABELS, LABEL_LENGTH = 9, 80
_MORE = " ... (all in the .nmsg.json)"


def build_provenance(
    model: NMSGModel,
    applied: NMSGConfig,
    *,
    input_path: str | Path,
    input_blake2b: str,
    fitted_here: bool,
    input_voxel_size: tuple[float, float, float],
    voxel_size: tuple[float, float, float],
    voxel_size_given: bool,
    level: int | None = None,
    background: str | None = None,
) -> dict[str, Any]:
    """The record of one output. ``applied``: the settings it was denoised with (the
    model's, with the inference settings the user set); ``voxel_size``: the one written,
    ``input_voxel_size``: the input's (Å, z y x; 0 = unknown); ``background``: the name
    of the mask the noise was learned in, None when it was found automatically."""
    from .batch.resume import config_key
    from .engine import NMSGConfig

    settings = config_key(applied)  # what can change the output's voxels
    default = config_key(NMSGConfig.preset("fast"))
    source: dict[str, Any] = {"name": Path(input_path).name, "blake2b": input_blake2b}
    if level is not None:
        source["level"] = level
    kind = model.noise_model.kind
    noise_model: dict[str, Any] = {"kind": kind, "fidelity": model.fidelity.get(kind)}
    if fitted_here:  # a given model was learned where its maker chose
        noise_model["background"] = background or "found automatically"
    return {
        "package_version": __version__,
        "input": source,
        "model": "fitted to this input" if fitted_here else "given",
        "seed": applied.seed,
        "noise_model": noise_model,
        "quality_estimate": model.quality.to_dict() if model.quality else None,
        "changed_settings": {k: v for k, v in settings.items() if v != default[k]},
        "config": applied.to_dict(),
        "voxel_size": {
            "input": list(input_voxel_size),
            "output": list(voxel_size),
            "from": "given" if voxel_size_given else "input",
        },
    }


def quality_label(quality: dict[str, Any]) -> str:
    """The quality estimate (``QualityEstimate.to_dict()``) in one MRC label."""
    flags = "".join(
        f"; {name}"
        for name, on in (
            ("fell back", quality["fell_back"]),
            ("over-smoothed", quality["over_smoothed"]),
            ("not to be trusted", quality.get("implausible", False)),
        )
        if on
    )
    return (
        f"nmsg estimate {quality['gain_over_gaussian_db']:+.2f} dB vs Gaussian "
        f"sigma {quality['gaussian_sigma']:g}{flags}"
    )


def _ascii(text: str) -> str:
    """MRC labels are printable ASCII (mrcfile refuses anything else): a file name may not be."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:LABEL_LENGTH]


def mrc_labels(record: dict[str, Any]) -> tuple[str, ...]:
    """As much of ``record`` as fits in an MRC header's free labels: the input,
    seed and noise model, the estimate, then the settings that differ from the default
    preset, cut short with a pointer to the sidecar if they do not fit."""
    source, noise = record["input"], record["noise_model"]
    level = f" level {source['level']}" if "level" in source else ""
    labels = [
        f"napari-nmsg {record['package_version']}: denoised {source['name']}",
        f"input{level} blake2b {source['blake2b']}",
    ]
    line = f"seed {record['seed']}; {noise['kind']} noise model"
    if noise.get("fidelity"):
        fidelity = noise["fidelity"]
        line += (
            f": log-PSD error {fidelity['log_psd_error']:.3f}, "
            f"variance ratio {fidelity['variance_ratio']:.3f}"
        )
    labels.append(line)
    if record["quality_estimate"]:
        labels.append(quality_label(record["quality_estimate"]))
    if record["voxel_size"]["from"] == "given":
        shown = _shown(record["voxel_size"]["output"]).replace("Å", "A")
        labels.append(f"voxel size {shown} as given, not the input's")
    changed = " ".join(f"{k}={v}" for k, v in record["changed_settings"].items())
    lines = textwrap.wrap(f"settings vs fast preset: {changed or 'none changed'}", LABEL_LENGTH)
    room = MRC_LABELS - len(labels)
    if len(lines) > room:
        lines = lines[:room]
        lines[-1] = lines[-1][: LABEL_LENGTH - len(_MORE)] + _MORE
    return tuple(_ascii(label) for label in labels + lines)


def _shown(voxel_size: tuple[float, ...] | list[float]) -> str:
    if len(set(voxel_size)) == 1:
        return f"{voxel_size[0]:g} Å"
    return " x ".join(f"{v:g}" for v in voxel_size) + " Å (z, y, x)"


def voxel_size_note(input_voxel_size: tuple[float, ...], given: float | None) -> str | None:
    """The one line a user is told about the voxel size written, unless it is simply the
    input's known one."""
    header = f"{_shown(input_voxel_size)} in the header"
    if not any(input_voxel_size):
        header = "0 Å in the header (unknown)"
    if given is not None:
        return f"voxel size: {header}; writing {given:g} Å as given by --voxel-size"
    if not any(input_voxel_size):
        return f"voxel size: {header}; the output says unknown too (give it with --voxel-size)"
    return None
