"""How far the self-supervised validation's noise is from the true noise, per noise model.

The Stein risk is ``|f(y) − y|² − |n|² + 2 tr(Σ ∂f/∂y)`` with ``|n|²`` and ``Σ`` taken from
the model's noise (after the local-amplitude map). On the validation window of a suite case
this compares the model probes' power with the true noise's (noisy − target) and a Gaussian
filter's estimated risk with its true one (in units of the true noise power). The pipeline
validates with the spectral fit whichever model trains, and subtracts that fit's expected
power; the GAN rows show the power its own draws would have had. Writes
``validation_calibration.{json,md}`` to ``--out``::

    python benchmarks/validation_calibration.py --cases vox4-crowded,tilt70-dosesym
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, command_line, log, machine_info, machine_markdown, write_json
from _suite_cases import case_names, simulate_case
from _table import Column, render_table

KINDS = ("spectral", "gan")
SIGMAS = (1.0, 1.5, 2.0, 2.5)


def run_case(name: str, kind: str, seed: int) -> dict[str, Any]:
    import torch

    from napari_nmsg.engine import NMSGConfig, iter_learn_noise, run_events
    from napari_nmsg.engine.noise_amplitude import AmplitudeSource, local_noise_amplitude
    from napari_nmsg.engine.pipeline import prepare_volume
    from napari_nmsg.engine.unet import gaussian_blur, gaussian_kernel
    from napari_nmsg.engine.validation import RecorruptedValidation, held_out_rows
    from napari_nmsg.engine.volume import NormalisedVolume

    data = simulate_case(name, seed)
    config = NMSGConfig.preset("fast", noise_model=kind, seed=seed)
    t0 = time.perf_counter()
    learning = run_events(iter_learn_noise(data["noisy"], config))
    spectral, model = learning.spectral_model.eval(), learning.noise_model.eval()
    source = prepare_volume(data["noisy"], config)
    clean = NormalisedVolume(data["target"], source.normalisation, source.fill)

    def amplitude_of(noise_model: Any) -> Any:
        return local_noise_amplitude(source, noise_model, torch.Generator().manual_seed(seed))

    amplitude = amplitude_of(spectral)
    rows = source.data_box[1]
    held_out = held_out_rows(rows.stop - rows.start, config.multiple)
    device = torch.device("cpu")
    # the same window and draws as the pipeline's validation, for the volume and its truth
    noisy, truth = (
        RecorruptedValidation(
            v, spectral, amplitude, config.alpha, held_out, config.multiple, device, seed
        )
        for v in (source, clean)
    )
    scored = noisy.scored
    true_power = float((noisy.noisy - truth.noisy)[scored].pow(2).mean())
    if model is spectral:
        power = noisy.noise_power
    else:  # the model's own draws, scaled by its own amplitude map as its pairs are
        with torch.no_grad():
            draws = model.sample(2, noisy.shape, torch.Generator().manual_seed(seed))
        own = AmplitudeSource(amplitude_of(model), source.shape).read(noisy.window)
        power = float((draws * torch.from_numpy(own))[scored].pow(2).mean())
    gaussians = {}
    for sigma in SIGMAS if model is spectral else ():  # the pipeline validates with it
        taps = gaussian_kernel(sigma)

        def blur(x: torch.Tensor, t: torch.Tensor = taps) -> torch.Tensor:
            return gaussian_blur(x, t)

        with torch.no_grad():
            true_risk = float((blur(noisy.noisy) - truth.noisy)[scored].pow(2).mean())
        gaussians[str(sigma)] = {
            "estimated": noisy.risk(blur) / true_power,
            "true": true_risk / true_power,
        }
    return {
        "probe_power_ratio": power / true_power,
        "gaussian_risk": gaussians,
        "seconds": time.perf_counter() - t0,
    }


def _risks(r: dict[str, Any]) -> str:
    if not r["gaussian_risk"]:
        return "– (validated with the spectral fit)"
    return "; ".join(
        f"σ {s}: {v['estimated']:.4f} / {v['true']:.4f}" for s, v in r["gaussian_risk"].items()
    )


COLUMNS = [
    Column("case", lambda r: r["case"]),
    Column("noise model", lambda r: r["kind"]),
    Column("probe power / true noise power", lambda r: r["probe_power_ratio"], ".4f"),
    Column("Gaussian risk / noise power: estimated / true", _risks),
]


def render(report: dict[str, Any]) -> str:
    rows = [{"case": c, "kind": k, **r} for c, kinds in report["cases"].items()
            for k, r in kinds.items()]  # fmt: skip
    return (
        "# Validation noise against the true noise\n\n"
        + machine_markdown(report["machine"])
        + f"\n\nCommand: `{report['command']}`\n\n"
        "Fast preset's noise learning; the validation window and probes the pipeline uses. "
        "Risks in units of the true noise power on the scored rows.\n\n"
        + render_table(rows, COLUMNS)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="vox4-crowded,tilt70-dosesym")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "validation_calibration")
    args = p.parse_args(argv)
    cases = case_names(args.cases, p.error)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "command": command_line(__file__, argv),
        "cases": {},
    }
    for name in cases:
        report["cases"][name] = {}
        for kind in KINDS:
            result = run_case(name, kind, args.seed)
            report["cases"][name][kind] = result
            log(f"[{name}] {kind}: probe power / true {result['probe_power_ratio']:.4f}")
            write_json(args.out / "validation_calibration.json", report)
            (args.out / "validation_calibration.md").write_text(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
