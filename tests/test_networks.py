"""Several networks trained from their own seeds and averaged (``networks``)."""

import dataclasses

import numpy as np
import pytest
import torch

from napari_nmsg import denoise, fit_denoiser
from napari_nmsg._session import Session
from napari_nmsg.engine import (
    Preview,
    Progress,
    iter_fit_denoiser,
    load_model,
    run_events,
    save_model,
)
from napari_nmsg.engine.unet import AveragedUNets, UNet3D


@pytest.fixture
def config(tiny_config):
    # kept against the validated Gaussian, so that the networks themselves are compared
    return tiny_config.replace(noise_model="spectral", gaussian_fallback=False, train_steps=6)


def test_the_first_network_is_the_one_network_and_the_second_differs(small_tomogram, config):
    one = fit_denoiser(small_tomogram.noisy, config).denoiser
    two = fit_denoiser(small_tomogram.noisy, config.replace(networks=2)).denoiser
    assert isinstance(one, UNet3D) and isinstance(two, AveragedUNets)
    first, second = two.members
    for name, weights in one.state_dict().items():
        torch.testing.assert_close(first.state_dict()[name], weights, rtol=0, atol=0)
    head = "head.weight"
    assert (first.state_dict()[head] - second.state_dict()[head]).abs().max() > 1e-4


def test_the_output_is_the_mean_of_each_network_applied_alone(small_tomogram, config):
    model = fit_denoiser(small_tomogram.noisy, config.replace(networks=2))
    alone = [
        denoise(small_tomogram.noisy, dataclasses.replace(model, denoiser=member))
        for member in model.denoiser.members
    ]
    both = denoise(small_tomogram.noisy, model)
    np.testing.assert_allclose(both, (alone[0] + alone[1]) / 2, rtol=0, atol=1e-5)
    assert np.abs(alone[0] - alone[1]).max() > 1e-4  # not one network twice


def test_progress_runs_over_every_network_and_previews_show_their_mean(small_tomogram, config):
    events = []
    run_events(
        iter_fit_denoiser(
            small_tomogram.noisy, config.replace(networks=2, preview_every=3), None, lambda: 16
        ),
        events.append,
    )
    train = [e for e in events if isinstance(e, Progress) and e.stage == "train"]
    assert [e.step for e in train] == list(range(1, 13))
    assert {e.total for e in train} == {12}
    assert [e.metrics["network"] for e in train] == [1] * 6 + [2] * 6
    assert [e for e in events if isinstance(e, Preview)]


def test_averaged_networks_save_as_format_2_and_load_to_the_same_output(
    tmp_path, small_tomogram, config
):
    model = fit_denoiser(small_tomogram.noisy, config.replace(networks=3))
    path = save_model(model, tmp_path / "three.pt")
    assert torch.load(path, weights_only=True)["format_version"] == 2
    loaded = load_model(path)
    assert isinstance(loaded.denoiser, AveragedUNets) and len(loaded.denoiser.members) == 3
    assert loaded.config.networks == 3
    session = Session()
    session.set_model(loaded, "three.pt")
    assert "3 averaged U-Nets depth 2, width 8, 6 steps" in session.describe_model()
    np.testing.assert_array_equal(
        denoise(small_tomogram.noisy, loaded), denoise(small_tomogram.noisy, model)
    )
    single = save_model(fit_denoiser(small_tomogram.noisy, config), tmp_path / "one.pt")
    assert torch.load(single, weights_only=True)["format_version"] == 1  # older readers read it


def test_a_fallen_back_model_is_one_gaussian_not_averaged_networks(small_tomogram, config):
    # four steps of a fresh network lose to the validated Gaussian
    model = fit_denoiser(
        small_tomogram.noisy, config.replace(networks=2, train_steps=4, gaussian_fallback=True)
    )
    assert model.quality.fell_back
    assert isinstance(model.denoiser, UNet3D) and model.config.networks == 1
