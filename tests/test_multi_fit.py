"""One model fitted on several volumes (``iter_fit_denoiser_many``), tiny volumes and steps."""

from __future__ import annotations

import numpy as np

from napari_nmsg.engine import (
    NMSGConfig,
    NMSGModel,
    Progress,
    iter_denoise,
    iter_fit_denoiser_many,
    run_events,
)
from napari_nmsg.engine.noise_learning import pool_noise_patches
from napari_nmsg.engine.noise_patches import NoisePatches
from napari_nmsg.engine.train import mixed_pairs
from napari_nmsg.simulate import simulate_tomogram


def test_pool_noise_patches_crops_to_the_smallest_size():
    rng = np.random.default_rng(0)

    def patches(n: int, size: int) -> NoisePatches:
        data = rng.normal(size=(n, size, size, size)).astype(np.float32)
        return NoisePatches(data, np.zeros((n, 3), int), size, f"{n} patches")

    big, small = patches(3, 16), patches(2, 8)
    pooled = pool_noise_patches([big, small])
    assert pooled.patches.shape == (5, 8, 8, 8) and pooled.patch_size == 8
    assert np.allclose(pooled.patches.mean(axis=(1, 2, 3)), 0, atol=1e-5)


def test_mixed_pairs_draws_from_every_volume():
    calls = []
    samplers = [lambda rng, gen, i=i: calls.append(i) or (i, i, i) for i in range(3)]
    sample = mixed_pairs(samplers)
    rng = np.random.default_rng(0)
    for _ in range(30):
        sample(rng, None)
    assert set(calls) == {0, 1, 2}


def test_fit_on_volumes_of_different_shapes():
    volumes = [
        simulate_tomogram((24, 32, 32), seed=1).noisy,
        simulate_tomogram((32, 32, 40), seed=2).noisy,
    ]
    config = NMSGConfig(
        train_steps=3, noise_model="spectral", crop=16, unet_width=8, tile=16, overlap=4
    )
    events = []
    model = run_events(iter_fit_denoiser_many(volumes, config), events.append)
    assert isinstance(model, NMSGModel)
    stages = [e.stage for e in events if isinstance(e, Progress)]
    # validated like a one-volume fit: on the first volume's held-out rows
    assert stages[0] == "noise-patches" and stages[-2:] == ["train", "validate"]
    assert model.quality is not None and model.config.base_sigma is not None
    assert [e.step for e in events if e.stage == "noise-patches"] == [0, 1, 2]
    for volume in volumes:
        out = run_events(iter_denoise(volume, model, config=config))
        assert out.shape == volume.shape and np.isfinite(out).all()
