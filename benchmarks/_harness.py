"""The quality benchmark's main process: simulate each case, run every method in a worker,
score the outputs and keep the report current.

A failure of one method (an exception, a crash, a timeout) becomes a row of the table, never
the end of the run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from _cases import (
    BY_NAME,
    CASE_NOTES,
    CASES,
    CURVE_METHODS,
    NETWORK_KINDS,
    VARIANT_LABELS,
    Method,
    method_config,
    unet_description,
)
from _common import log, run_worker, write_json
from _metrics import quality_metrics, seam_controls
from _report import total_s, write_reports
from _workers import worker_main


class Runner:
    """Runs the cases of one ``run.py`` call into ``report``; ``script`` is the entry that
    ``run_worker`` starts as ``script --_worker SPEC``."""

    def __init__(
        self,
        args: argparse.Namespace,
        work: Path,
        script: Path,
        report: dict[str, Any],
        base: Any,
        sets: dict[str, Any],
    ):
        self.args, self.work, self.script = args, work, script
        self.report, self.base, self.sets = report, base, sets
        self.start = time.perf_counter()

    def log(self, message: str) -> None:
        log(message, self.start)

    def save(self) -> None:
        write_reports(self.report, self.args.out)

    def call(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Run one worker (fresh subprocess unless --in-process); never raises."""
        spec_path = self.work / f"{name}.spec.json"
        spec["result"] = str(self.work / f"{name}.result.json")
        write_json(spec_path, spec)
        t0 = time.perf_counter()
        tail: list[str] = []
        try:
            if self.args.in_process:
                worker_main(str(spec_path))
            else:
                _, tail = run_worker(
                    self.script,
                    spec_path,
                    lambda line: print(line, flush=True),
                    self.args.method_timeout,
                )
            result = json.loads(Path(spec["result"]).read_text())
        except Exception as exc:  # a crash, a kill or an unreadable result
            last = next((t for t in reversed(tail) if t.strip()), "")
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}; {last}"[:300]}
        result["process_s"] = time.perf_counter() - t0
        return result

    def run_case(self, case: str) -> None:
        """Every method of the run on one simulated case, then the case's figures."""
        case_dir = self.work / case
        case_dir.mkdir(parents=True, exist_ok=True)
        sim, entry = self._simulate(case, case_dir)
        self.report["cases"][case] = entry
        methods = [BY_NAME[n] for n in self.args.method_list]
        if self.args.full and not self.args.methods_given and case != self.args.case_list[0]:
            methods = [m for m in methods if m.kind != "preset"]  # presets: first case only
        configs = {
            m.name: method_config(self.base, m, self.args.preset, self.sets)
            for m in methods
            if m.kind in NETWORK_KINDS
        }
        noise_paths = self._learn_noise_models(case, case_dir, methods, configs, entry)
        outputs: dict[str, np.ndarray] = {}
        for method in methods:
            self.log(f"[{case}] {method.name}: {method.label}")
            kind = configs[method.name].noise_model if method.kind == "nmsg" else None
            if kind is not None and kind not in noise_paths:
                error = f"the {kind} noise model could not be learned"
                entry["methods"][method.name] = {"label": method.label, "ok": False, "error": error}
                continue
            result = self._run_method(case, case_dir, method, sim, configs, noise_paths.get(kind))
            row = self._score(case_dir, method, result, sim, configs, outputs)
            entry["methods"][method.name] = row
            self._variants(case, method, row, result, sim, entry, outputs)
            if row.get("ok"):
                self.log(
                    f"[{case}] {method.name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
                    f"{total_s(row):.0f}s, peak RSS {row.get('peak_rss_mb', 0):.0f} MB"
                )
            else:
                self.log(f"[{case}] {method.name} FAILED: {row.get('error')}")
            self.save()
        try:
            import _figures

            _figures.case_figures(
                case, entry, outputs, sim.target, sim.voxel_size, case_dir, self.args.out
            )
        except Exception as exc:
            entry["figure_error"] = f"{type(exc).__name__}: {exc}"
            self.log(f"[{case}] figures FAILED: {exc}")
        self.save()

    def _simulate(self, case: str, case_dir: Path) -> tuple[Any, dict[str, Any]]:
        """The case's volumes, saved for the workers, and its report entry."""
        from napari_nmsg.simulate import simulate_tomogram

        params = CASES[case]
        self.log(f"[{case}] simulating {params}")
        t0 = time.perf_counter()
        others = {k: v for k, v in params.items() if k != "shape"}
        sim = simulate_tomogram(params["shape"], seed=self.args.seed, **others)
        for key in ("noisy", "even", "odd", "target"):
            np.save(case_dir / f"{key}.npy", getattr(sim, key))
        entry: dict[str, Any] = {
            "params": {**params, "shape": list(params["shape"]), "seed": self.args.seed},
            "description": CASE_NOTES.get(case, ""),
            "voxel_size_A": sim.voxel_size,
            "simulate_s": time.perf_counter() - t0,
            "noise": {},
            "methods": {},
        }
        return sim, entry

    def _learn_noise_models(
        self,
        case: str,
        case_dir: Path,
        methods: list[Method],
        configs: dict[str, Any],
        entry: dict[str, Any],
    ) -> dict[str, tuple[str, float]]:
        """The noise models the NMSG rows share, learned once per kind in their own process.

        The spectral one is always learned: its fidelity is the reference of the report.
        Returns kind → (saved model, seconds it took).
        """
        kinds = sorted({configs[m.name].noise_model for m in methods if m.kind == "nmsg"})
        if kinds:
            kinds = sorted(set(kinds) | {"spectral"})
        noise_paths: dict[str, tuple[str, float]] = {}
        for kind in kinds:
            cfg = self.base.replace(noise_model=kind)
            gan_steps = cfg.gan_steps if kind == "gan" else 0
            self.log(f"[{case}] learning the {kind} noise model ({gan_steps} GAN steps)")
            spec = {
                "kind": "noise",
                "method": f"noise-{kind}",
                "case_dir": str(case_dir),
                "config": cfg.to_dict(),
                "noise_out": str(case_dir / f"noise-{kind}.pt"),
                "spectra_out": str(case_dir / f"noise-{kind}-spectra.npz"),
                "threads": self.args.threads,
            }
            result = self.call(f"{case}-noise-{kind}", spec)
            entry["noise"][kind] = result
            if result.get("ok"):
                noise_paths[kind] = (spec["noise_out"], result["noise_s"])
                self.log(f"[{case}] {kind} noise model: {result['noise_s']:.0f}s, {result['note']}")
            else:
                self.log(f"[{case}] {kind} noise model FAILED: {result.get('error')}")
            self.save()
        return noise_paths

    def _run_method(
        self,
        case: str,
        case_dir: Path,
        method: Method,
        sim: Any,
        configs: dict[str, Any],
        noise: tuple[str, float] | None,
    ) -> dict[str, Any]:
        """The method's worker result; its output volume is ``case_dir/<name>.npy``.

        ``noise``: the shared noise model an NMSG row starts from, and its learning time.
        """
        out_path = case_dir / f"{method.name}.npy"
        if method.kind == "input":
            np.save(out_path, sim.noisy)
            return {"ok": True, "infer_s": 0.0}
        spec: dict[str, Any] = {
            "kind": method.kind,
            "method": method.name,
            "case_dir": str(case_dir),
            "out": str(out_path),
            "threads": self.args.threads,
            "config": (configs.get(method.name) or self.base).to_dict(),
        }
        if method.name in CURVE_METHODS:
            spec["curve_points"] = self.args.curve_points
        if method.name == "nmsg":
            spec["seam_control"] = True
        if noise is not None:
            spec["noise_path"], spec["noise_s"] = noise
        return self.call(f"{case}-{method.name}", spec)

    def _score(
        self,
        case_dir: Path,
        method: Method,
        result: dict[str, Any],
        sim: Any,
        configs: dict[str, Any],
        outputs: dict[str, np.ndarray],
    ) -> dict[str, Any]:
        """The method's row: its result, its budget, and the scores of its output."""
        row: dict[str, Any] = {"label": method.label, **result}
        if method.name in configs:
            cfg = configs[method.name]
            row["budget"] = {
                "train_steps": cfg.train_steps,
                "gan_steps": cfg.gan_steps if cfg.noise_model == "gan" else 0,
                "crop": cfg.crop,
                "batch": cfg.batch_size,
                "unet": unet_description(cfg),
            }
        if not result.get("ok"):
            return row
        try:
            estimate = np.load(case_dir / f"{method.name}.npy")
            outputs[method.name] = estimate
            row.update(quality_metrics(estimate, sim.target, sim.voxel_size))
            if method.name == "nmsg":
                cfg = configs["nmsg"]
                axis = int(np.argmin(estimate.shape)) if cfg.wedge_axis is None else cfg.wedge_axis
                row["seam"] = seam_controls(
                    estimate, case_dir, sim.target, cfg.tile, cfg.overlap, cfg.multiple, axis
                )
        except Exception as exc:
            row["ok"] = False
            row["error"] = f"metrics: {type(exc).__name__}: {exc}"
        return row

    def _variants(
        self,
        case: str,
        method: Method,
        row: dict[str, Any],
        result: dict[str, Any],
        sim: Any,
        entry: dict[str, Any],
        outputs: dict[str, np.ndarray],
    ) -> None:
        """Rows of the other inferences of the method's trained network."""
        if not result.get("ok"):
            return
        for variant, info in (result.get("variants") or {}).items():
            name = f"{method.name}-{variant}"
            extra = {
                **{k: v for k, v in row.items() if k in ("noise_s", "fit_s", "budget")},
                "label": f"{method.label}, {VARIANT_LABELS[variant]}",
                "ok": True,
                "infer_s": info["infer_s"],
                "same_network_as": method.name,
            }
            estimate = np.load(info["file"])
            outputs[name] = estimate
            extra.update(quality_metrics(estimate, sim.target, sim.voxel_size))
            entry["methods"][name] = extra
            self.log(f"[{case}] {name}: PSNR {extra['psnr']:.2f} dB")
