"""Case suite: the default click against what a user would pick instead, on data that differ
the way real tomograms do.

Each case varies one or a few things from a base (voxel size, content, noise, tilts,
thickness, stationarity, fill frames, axis order). Cases marked ``tune`` were looked at while
choosing the defaults; the ``held-out`` ones were only run after the choice. Every method of a case
runs in the same process, one after another, so timings are side by side::

    python benchmarks/suite.py                         # every case, fast preset, peers
    python benchmarks/suite.py --cases vox4-crowded --methods noisy,gaussian,fast
    python benchmarks/suite.py --methods noisy,gaussian,fast,quality --cases vox4-crowded
    python benchmarks/suite.py --methods fast,fast-gan   # the GAN noise model, same budget

Writes ``suite.md``, ``suite.json``, ``suite.png`` and ``suite_curves.png`` (PSNR against
time) to ``--out`` (default benchmarks/results/suite), appending cases as they finish so a
partial run is kept.
Topaz-3D (GPL-3, benchmark only) runs in a separate environment whose Python ``--topaz``
names (``benchmarks/topaz_peer.py``); the package never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_OUT,
    command_line,
    log,
    machine_for,
    machine_markdown,
    save_figure,
    seed_for,
    write_json,
)
from _suite_cases import (
    CASES,
    DEFAULT_METHODS,
    METHODS,
    PRESET_VARIANTS,
    REFERENCES,
    noise_realisations,
    scored,
    simulate_case,
)
from _table import Column, render_table

# independent true-noise realisations the perfect-noise reference (r2r-true) samples from
TRUE_NOISE_REALISATIONS = 4
# the references' U-Net depth, steps and skips: the fast preset's when their rows were made
# (it has one level, 1600 steps and an additive skip since), so that they stay comparable
# with the rows on record
REFERENCE_DEPTH, REFERENCE_STEPS, REFERENCE_ADDITIVE_SKIPS = 2, 2400, False

if TYPE_CHECKING:
    import torch

    from napari_nmsg.engine import NMSGConfig
    from napari_nmsg.engine.model import NoiseLearning
    from napari_nmsg.engine.train import PairSampler
    from napari_nmsg.engine.volume import NormalisedVolume


def oracle_tv(noisy: np.ndarray, target: np.ndarray, data) -> tuple[float, np.ndarray]:
    from skimage.restoration import denoise_tv_chambolle

    from napari_nmsg.metrics import psnr

    scale = float(np.std(noisy))
    best = (-np.inf, noisy)
    for weight in (0.5, 1.0, 2.0, 4.0):
        out = denoise_tv_chambolle(noisy, weight=weight * scale, max_num_iter=60)
        score = psnr(scored(data, out), scored(data, target))
        if score > best[0]:
            best = (score, out)
    return best


def run_topaz(python: str, noisy: np.ndarray, voxel: float) -> np.ndarray:
    """Topaz-3D's pretrained model on the whole volume, in Topaz's own environment."""
    import mrcfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.mrc"), Path(tmp, "out.mrc")
        with mrcfile.new(src) as mrc:
            mrc.set_data(noisy.astype(np.float32))
            mrc.voxel_size = voxel
        driver = Path(__file__).with_name("topaz_peer.py")
        subprocess.run([python, str(driver), str(src), str(dst)], check=True)
        with mrcfile.open(dst) as mrc:
            return np.array(mrc.data, dtype=np.float32)


def run_preset(
    method: str, data: dict[str, Any], seed: int, curve_points: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """The preset exactly as ``nmsg denoise`` runs it, with its self-supervised estimate;
    with ``curve_points``, whole-volume previews on the way give a PSNR-vs-time curve (the
    preview budget may skip some; their time is not counted). Also the same network's single
    pass ``f(y)`` (not timed: it shows what the averaged pairs add)."""
    from napari_nmsg import NMSGConfig, denoise
    from napari_nmsg.engine import Preview, Progress, iter_run, run_events
    from napari_nmsg.metrics import psnr

    noisy, truth = data["noisy"], scored(data, data["target"])
    preset, overrides = PRESET_VARIANTS.get(method, (method, {}))
    config = NMSGConfig.preset(preset, seed=seed, **overrides)
    position = None
    if curve_points:
        every = max(1, config.train_steps // curve_points)
        config = config.replace(preview_every=every, preview_depth=max(noisy.shape))

        def position() -> int:
            return noisy.shape[0] // 2

    clock = {"eval_s": 0.0, "last": 0.0, "step": 0, "fitted": 0.0}
    curve: list[dict[str, float]] = []

    def on_event(event: Any) -> None:
        now = time.perf_counter()
        if isinstance(event, Progress) and event.stage == "train":
            clock["last"], clock["step"] = now, event.step
        elif isinstance(event, Progress) and event.stage == "validate":  # the fit's end
            clock["fitted"] = now
        elif isinstance(event, Preview):
            seconds = clock["last"] - t0 - clock["eval_s"]
            value = psnr(scored(data, event.array), truth)
            curve.append({"step": clock["step"], "seconds": seconds, "psnr": value})
            clock["eval_s"] += time.perf_counter() - clock["last"]

    noise = true_spectrum_noise(data, config) if method.endswith("-true-spectrum") else None
    t0 = time.perf_counter()
    run = run_events(iter_run(noisy, config, noise, preview_position=position), on_event)
    seconds = time.perf_counter() - t0 - clock["eval_s"]
    model, out = run.model, run.output
    single = replace(model, config=model.config.replace(inference_pairs=0))
    one_pass = denoise(noisy, single)
    curve.append(
        {"step": config.train_steps, "seconds": seconds, "psnr": psnr(scored(data, out), truth)}
    )
    extra = {
        "timed_s": seconds,
        "fit_s": clock["fitted"] - t0 - clock["eval_s"],
        "base_sigma": model.config.base_sigma,
        "quality": model.quality.to_dict() if model.quality else None,
        "single_pass_psnr": psnr(scored(data, one_pass), truth),
        "curve": curve,
    }
    return out, extra


def true_spectrum_noise(data: dict[str, Any], config: NMSGConfig) -> NoiseLearning:
    """The noise ``config`` learns from ``data["noisy"]``, with its spectral model refitted to
    the true noise (noisy − target) at random places inside the data, as many patches as
    the background search found: what a perfect spectrum estimate gives, the rest of the
    pipeline (amplitude map, validation, checkpoint choice) unchanged."""
    import torch

    from _common import true_noise_patches
    from napari_nmsg.engine import run_events
    from napari_nmsg.engine.noise_learning import iter_learn_noise_from
    from napari_nmsg.engine.noise_model import SpectralNoise, spectral_kernel
    from napari_nmsg.engine.pipeline import prepare_volume

    learned = run_events(iter_learn_noise_from([prepare_volume(data["noisy"], config)], config))
    patches = learned.patches.patches
    rng = np.random.default_rng(config.seed)
    true = true_noise_patches(data, learned.normalisation, patches.shape[-1], len(patches), rng)
    model = SpectralNoise(torch.from_numpy(spectral_kernel(true))).eval()
    return replace(learned, noise_model=model)


def run_reference(
    method: str, data: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Noise2Noise on the even/odd halves, supervised on the truth, or Recorrupted-to-
    Recorrupted with the true noise, with the fast preset's crops and its U-Net and
    steps as they were when these rows were made (depth 2, width 8, 2400 steps,
    concatenating skips; ``REFERENCE_DEPTH``, ``REFERENCE_STEPS``,
    ``REFERENCE_ADDITIVE_SKIPS``),
    and the same Gaussian base (the one best for its input, widened as in the pipeline) and
    quarter-turn rule (``quarter_turns_for`` on that σ).

    N2N is applied as ½(f(even) + f(odd)), each half at the noise it trained on.
    ``r2r-true`` is NMSG with a perfect noise model: each pair ``y + αz → y − z/α`` takes
    ``z`` from one of ``data["realisations"]`` (true noise, non-stationarity included) at
    the crop's own place, and it is applied as the mean of ``f(y ± αz)`` over two of them
    (the fast preset's pair count, without its in-plane symmetry per pair); its one pass
    ``f(y)`` is returned beside it."""
    import torch

    from napari_nmsg.engine import NMSGConfig, NMSGModel, iter_denoise, resolve_device, run_events
    from napari_nmsg.engine.noise_model import SpectralNoise
    from napari_nmsg.engine.pipeline import BASE_WIDENING, prepare_volume, quarter_turns_for
    from napari_nmsg.engine.train import aligned_pairs, iter_train
    from napari_nmsg.engine.volume import NormalisedVolume
    from napari_nmsg.metrics import best_gaussian

    noisy = data["noisy"]
    first, second = {
        "n2n": ("even", "odd"),
        "supervised": ("noisy", "target"),
        "r2r-true": ("noisy", None),  # its second volumes are noisy + each realisation
    }[method]
    _, sigma, _ = best_gaussian(scored(data, data[first]), scored(data, data["target"]))
    config = NMSGConfig.preset(
        "fast",
        seed=seed,
        base_sigma=BASE_WIDENING * sigma,
        quarter_turns=quarter_turns_for(sigma),  # the presets' rule, on the oracle σ
        unet_depth=REFERENCE_DEPTH,
        train_steps=REFERENCE_STEPS,
        additive_skips=REFERENCE_ADDITIVE_SKIPS,
    )
    source = prepare_volume(noisy, config)
    norm, fill = source.normalisation, source.fill
    device = resolve_device(config.device)

    def volume(array: np.ndarray) -> NormalisedVolume:
        return NormalisedVolume(array, norm, fill)

    if method == "r2r-true":
        recorrupted = [volume(noisy + z) for z in data["realisations"]]
        pairs = true_noise_pairs(volume(noisy), recorrupted, config, device)
    else:
        a, b = volume(data[first]), volume(data[second])
        pairs = aligned_pairs(a, b, config, device, config.multiple, swap=method == "n2n")
    net = run_events(iter_train(pairs, config, device)).cpu()
    # the model applies f(y): it has no noise model to recorrupt with (r2r-true adds its
    # pairs of true noise below)
    model = NMSGModel(
        config.replace(inference_pairs=0), SpectralNoise(torch.zeros(3, 3, 3)), net, norm
    )

    def apply(array: np.ndarray) -> np.ndarray:
        return run_events(iter_denoise(array, model, normalisation=norm))

    if method == "supervised":
        return apply(noisy), None
    if method == "n2n":
        return (apply(data["even"]) + apply(data["odd"])) / 2, None
    steps = [config.alpha * z for z in data["realisations"][: config.inference_pairs]]
    passes = [apply(noisy + sign * step) for step in steps for sign in (1, -1)]
    return np.mean(passes, axis=0), apply(noisy)


def true_noise_pairs(
    noisy: NormalisedVolume,
    recorrupted: list[NormalisedVolume],
    config: NMSGConfig,
    device: torch.device,
) -> PairSampler:
    """R2R pairs whose recorrupting noise is a true noise realisation at the crop's place:
    the difference of aligned crops of ``noisy`` and of ``noisy`` plus one realisation
    (drawn at random for each batch)."""
    import torch

    from napari_nmsg.engine.pairs import make_pair
    from napari_nmsg.engine.train import augment_inplane, crop_shape, random_crops

    size = crop_shape(noisy.shape, config.crop, config.multiple)

    def sample(rng: np.random.Generator, generator: torch.Generator):
        other = recorrupted[int(rng.integers(len(recorrupted)))]
        crops = random_crops([noisy, other], size, config.batch_size, rng)
        y, y_plus_z = (torch.from_numpy(c).to(device) for c in crops)
        inputs, targets = make_pair(y, y_plus_z - y, config.pairing, config.alpha)
        return tuple(augment_inplane([inputs, targets, y], rng, config.turns))

    return sample


def run_case(name: str, methods: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from scipy import ndimage
    from skimage.metrics import structural_similarity

    from napari_nmsg.metrics import affine_fit, best_gaussian, pearson, psnr

    data = simulate_case(name, args.seed)
    if "r2r-true" in methods:
        data["realisations"] = noise_realisations(name, args.seed, data, TRUE_NOISE_REALISATIONS)
    noisy, target = data["noisy"], data["target"]
    truth = scored(data, target)
    rows: dict[str, Any] = {}
    for method in methods:
        log(f"[{name}] {method}")
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if method == "noisy":
            out = noisy
        elif method == "gaussian":
            _, sigma, _ = best_gaussian(scored(data, noisy), truth)
            out = ndimage.gaussian_filter(noisy, sigma)
            extra["sigma"] = sigma
        elif method == "tv":
            out = oracle_tv(noisy, target, data)[1]
        elif method == "topaz":
            if not args.topaz:
                continue
            out = run_topaz(args.topaz, noisy, data["voxel_size"])
        elif method in REFERENCES:
            out, one_pass = run_reference(method, data, args.seed)
            if one_pass is not None:
                extra["single_pass_psnr"] = psnr(scored(data, one_pass), truth)
        else:
            out, extra = run_preset(method, data, args.seed, args.curve_points)
            if extra["quality"]:
                extra["validated_gaussian_psnr"] = validated_gaussian_psnr(data, extra["quality"])
        seconds = extra.pop("timed_s", time.perf_counter() - t0)
        fitted = affine_fit(scored(data, out), truth)
        rows[method] = {
            "psnr": psnr(scored(data, out), truth),
            "ssim": float(
                structural_similarity(fitted, truth, data_range=float(truth.max() - truth.min()))
            ),
            "pearson": pearson(scored(data, out), truth),
            "seconds": seconds,
            **extra,
        }
        if "scored" in data and method not in ("noisy", "gaussian", "tv", "topaz", *REFERENCES):
            outside = np.ones(noisy.shape, bool)
            outside[data["scored"]] = False
            rows[method]["fill_kept"] = bool(np.array_equal(out[outside], noisy[outside]))
        log(f"[{name}] {method}: {rows[method]['psnr']:.2f} dB in {seconds:.0f} s")
    return {"role": CASES[name]["role"], "note": CASES[name]["note"], "methods": rows}


def validated_gaussian_psnr(data: dict[str, Any], quality: dict[str, Any]) -> float:
    """True PSNR of the Gaussian the estimate compares with: at the σ it validated."""
    from scipy import ndimage

    from napari_nmsg.metrics import psnr

    out = ndimage.gaussian_filter(data["noisy"], quality["gaussian_sigma"])
    return psnr(scored(data, out), scored(data, data["target"]))


def ranking_agreement(report: dict[str, Any], oracle: bool = False) -> tuple[int, int]:
    """Pairs of (validated Gaussian, each preset) per case whose order by the estimated
    risk matches their order by true PSNR. The Gaussian's truth is the one at the σ the
    estimate validated, or with ``oracle`` the oracle Gaussian's (a stricter test: a
    different, better filter than the one estimated)."""
    agree = total = 0
    for case in report["cases"].values():
        rows = case["methods"]
        losses, truth = {}, {}
        for name, row in rows.items():
            if row.get("quality") and name not in PRESET_VARIANTS:
                losses[name], truth[name] = row["quality"]["loss"], row["psnr"]
                gaussian = (
                    rows.get("gaussian", {}).get("psnr")
                    if oracle
                    else row.get("validated_gaussian_psnr")
                )
                if gaussian is not None:
                    losses["gaussian"] = row["quality"]["gaussian_loss"]
                    truth["gaussian"] = gaussian
        names = list(losses)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                total += 1
                agree += (losses[b] - losses[a]) * (truth[a] - truth[b]) > 0
    return agree, total


def _fast_vs_gaussian(case: dict[str, Any]) -> str:
    """The fast preset's estimated gain over its validated Gaussian, its true gain over that
    same Gaussian, and its true gain over the oracle Gaussian."""
    r = case["methods"]
    fast = r.get("fast", {})
    q = fast.get("quality") or {}
    if not (q and "gaussian" in r):
        return ""
    validated = fast.get("validated_gaussian_psnr")
    same = "–" if validated is None else f"{fast['psnr'] - validated:+.2f}"
    gain = (
        f"{q['gain_over_gaussian_db']:+.2f} / {same} / {fast['psnr'] - r['gaussian']['psnr']:+.2f}"
    )
    return gain + (" (fell back)" if q.get("fell_back") else "")


def _columns(methods: list[str]) -> list[Column]:
    def psnr(m: str) -> Column:
        return Column(
            f"{m} dB", lambda c: c["methods"][m]["psnr"] if m in c["methods"] else "", ".2f"
        )

    return [
        Column("case", lambda c: c["name"]),
        Column("role", lambda c: c["role"]),
        *(psnr(m) for m in methods),
        Column("fast s", lambda c: c["methods"].get("fast", {}).get("seconds"), ".0f"),
        Column(
            "fast vs Gaussian dB: est. / true (validated σ) / true (oracle σ)", _fast_vs_gaussian
        ),
        *(_single_pass(m) for m in methods if m in ("r2r-true", "fast", *PRESET_VARIANTS)),
    ]


def _single_pass(method: str) -> Column:
    """The preset's network applied once, ``f(y)``, without the averaged pairs."""

    def cell(case: dict[str, Any]) -> str:
        row = case["methods"].get(method, {})
        return f"{row['single_pass_psnr']:.2f}" if "single_pass_psnr" in row else ""

    return Column(f"{method} one pass f(y) dB", cell)


def render(report: dict[str, Any]) -> str:
    methods = [m for m in METHODS if any(m in c["methods"] for c in report["cases"].values())]
    rows = [{"name": name, **case} for name, case in report["cases"].items()]
    agree, total = ranking_agreement(report)
    oracle_agree, oracle_total = ranking_agreement(report, oracle=True)
    notes = "\n".join(f"- **{n}**: {c['note']}" for n, c in report["cases"].items())
    return (
        "# Case suite\n\n"
        + machine_markdown(report["machine"])
        + f"\n\nCommand: `{report['command']}`\n\n"
        + f"Seed {report.get('seed', 0)}: of training, and of the data where a case fixes none.\n\n"
        + "PSNR (dB) against the noiseless reconstruction after an affine fit, inside any fill "
        "frame; Gaussian and TV use the oracle (ground-truth-chosen) setting. Times are wall "
        "seconds on this machine, methods run one after another.\n\n"
        + render_table(rows, _columns(methods))
        + f"\n\nThe self-supervised estimate (Stein's risk on held-out rows) orders the "
        f"Gaussian it validated and the presets as their true PSNR does on {agree} of {total} "
        f"pairs; against the oracle Gaussian (a better filter than the one it estimated) on "
        f"{oracle_agree} of {oracle_total}.\n\nCases:\n{notes}\n"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["cases"])
    present = {m for case in report["cases"].values() for m in case["methods"]}
    methods = [m for m in METHODS if m != "noisy" and m in present]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        gains = [
            c["methods"][method]["psnr"] - c["methods"]["noisy"]["psnr"]
            if method in c["methods"] and "noisy" in c["methods"]
            else np.nan
            for c in report["cases"].values()
        ]
        ax.bar(np.arange(len(names)) + i * width, gains, width, label=method)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set_ylabel("PSNR gain over the noisy input (dB)")
    ax.legend(fontsize=8, ncol=3)
    machine = report["machine"]
    ax.set_title(f"Case suite ({machine['cpu_model']}, {machine['cpu_cores']} cores)", fontsize=9)
    save_figure(fig, path)


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """PSNR against wall time for each preset run that kept a curve, one panel per case,
    with the peers (which train nothing here) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = {
        n: c for n, c in report["cases"].items() if any("curve" in r for r in c["methods"].values())
    }
    if not cases:
        return
    # one colour per method in every panel: a case's rows are in the order they were run
    curved = [m for m in METHODS if any("curve" in c["methods"].get(m, {}) for c in cases.values())]
    colours = {m: f"C{i}" for i, m in enumerate(curved)}
    columns = min(4, len(cases))
    rows = -(-len(cases) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax, (name, case) in zip(axes.flat[: len(cases)], cases.items(), strict=True):
        for method in curved:
            if "curve" in case["methods"].get(method, {}):
                points = case["methods"][method]["curve"]
                ax.plot([p["seconds"] for p in points], [p["psnr"] for p in points], "o-",
                        ms=3, c=colours[method], label=method)  # fmt: skip
        for peer, style in (("gaussian", ":"), ("topaz", "--"), ("n2n", "-.")):
            if peer in case["methods"]:
                ax.axhline(case["methods"][peer]["psnr"], ls=style, c="grey", lw=1, label=peer)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(cases) :]:
        ax.axis("off")
    handles = {}  # every method and peer once, whichever panel has it
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    axes.flat[0].legend(handles.values(), handles.keys(), fontsize=6)
    fig.supxlabel("wall seconds (learn + fit + denoise)", fontsize=9)
    fig.supylabel("PSNR (dB)", fontsize=9)
    save_figure(fig, path, dpi=110)


def score_validated_gaussians(
    report: dict[str, Any], cases: list[str], args: argparse.Namespace
) -> int:
    """Fill in ``validated_gaussian_psnr`` of saved preset rows (the case is simulated
    again from its seed; the σ is the one the run validated), then render again."""
    for name in cases:
        rows = report["cases"].get(name, {}).get("methods", {})
        todo = [r for r in rows.values() if r.get("quality") and "validated_gaussian_psnr" not in r]
        if todo:
            data = simulate_case(name, args.seed)
            for row in todo:
                row["validated_gaussian_psnr"] = validated_gaussian_psnr(data, row["quality"])
            log(f"[{name}] validated Gaussians scored")
    write_json(args.out / "suite.json", report)
    (args.out / "suite.md").write_text(render(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"from {', '.join(METHODS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--topaz", default=os.environ.get("TOPAZ_PYTHON"), help="Python of a topaz-em environment"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "suite")
    p.add_argument(
        "--curve-points", type=int, default=4, help="previews per preset run for PSNR vs time"
    )
    p.add_argument(
        "--score-validated-gaussians",
        action="store_true",
        help="only add the true PSNR of each preset's validated Gaussian to the saved report",
    )
    args = p.parse_args(argv)
    cases, methods = args.cases.split(","), args.methods.split(",")
    unknown = [c for c in cases if c not in CASES] + [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown case or method: {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "suite.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {"cases": {}}
    if args.score_validated_gaussians:
        return score_validated_gaussians(report, cases, args)
    report["machine"] = machine_for(report, p.error)
    report["seed"] = seed_for(report, args.seed, p.error)
    command = command_line(__file__, argv)
    # runs add rows to the saved report, so it keeps every command that made them
    report["command"] = f"{report['command']}; then {command}" if "command" in report else command
    for name in cases:
        previous = report["cases"].get(name, {}).get("methods", {})
        result = run_case(name, methods, args)
        result["methods"] = {**previous, **result["methods"]}
        report["cases"][name] = result
        write_json(json_path, report)
        (args.out / "suite.md").write_text(render(report))
        plot(report, args.out / "suite.png")
        plot_curves(report, args.out / "suite_curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
