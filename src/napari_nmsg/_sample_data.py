"""npe2 sample data: a simulated tomogram and its noiseless target, made in about a second."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._layers import display_limits

SAMPLE_SHAPE = (64, 64, 64)


def make_sample_data(shape: tuple[int, int, int] = SAMPLE_SHAPE, seed: int = 0):
    """Two image layers: the noisy simulated tomogram and, hidden above it, its ground truth.

    The ground truth is what a perfect denoiser could reach (same missing wedge and CTF);
    it is never used by the denoiser, only for looking at the result.
    """
    from .simulate import simulate_tomogram  # imports torch: only when a sample is made

    # napari calls this on its main thread. torch's OpenMP keeps a team of threads for every
    # thread that ran a parallel op, and a team left on the main thread spins against the
    # widget's training in its worker: 1.6x slower on 2 cores. A thread that ends with the
    # simulation takes its team with it.
    with ThreadPoolExecutor(max_workers=1) as simulation:
        sim = simulation.submit(simulate_tomogram, shape, seed=seed).result()
    scale = (sim.voxel_size,) * 3
    info: dict[str, Any] = {"simulated": True, "snr": sim.snr, "seed": seed}
    limits = display_limits(sim.noisy)
    target = (
        sim.target,
        {
            "name": "simulated tomogram (ground truth)",
            "scale": scale,
            "metadata": {**info, "ground_truth": True},
            "colormap": "gray",
            "contrast_limits": display_limits(sim.target),
            "visible": False,
        },
        "image",
    )
    noisy = (
        sim.noisy,
        {
            "name": "simulated tomogram",
            "scale": scale,
            "metadata": info,
            "colormap": "gray",
            "contrast_limits": limits,
        },
        "image",
    )
    return [noisy, target]
