"""Self-supervised validation against the ground truth of small simulations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_nmsg.engine import NMSGConfig, load_model, run_events, save_model
from napari_nmsg.engine.noise_learning import iter_learn_noise_from
from napari_nmsg.engine.noise_model import SpectralNoise
from napari_nmsg.engine.pipeline import (
    BASE_WIDENING,
    _resolve_auto,
    iter_denoise,
    iter_fit_denoiser,
    prepare_volume,
    quarter_turns_for,
)
from napari_nmsg.engine.unet import gaussian_blur, gaussian_kernel
from napari_nmsg.engine.validation import (
    SIGMAS,
    RecorruptedValidation,
    held_out_rows,
    training_region,
)
from napari_nmsg.metrics import best_gaussian, psnr
from napari_nmsg.provenance import quality_label
from napari_nmsg.simulate import simulate_tomogram


@pytest.fixture(scope="module")
def tomogram():
    return simulate_tomogram((48, 48, 48), snr=0.1, seed=11)


@pytest.fixture(scope="module")
def validation(tomogram):
    config = NMSGConfig(seed=0)
    source = prepare_volume(tomogram.noisy, config)
    noise = run_events(iter_learn_noise_from([source], config))
    held = held_out_rows(source.shape[1], 4)
    valid = RecorruptedValidation(
        source, noise.noise_model, None, 1.0, held, 4, torch.device("cpu"), seed=0
    )
    return source, valid


def test_the_gaussian_mirrors_the_volume_edges():
    """A replicated edge voxel would count up to the radius times with its own noise, and
    the validation scores the rows at the volume's end."""
    volume = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    blurred = gaussian_blur(torch.from_numpy(volume)[None, None], gaussian_kernel(1.5))[0, 0]
    expected = ndimage.gaussian_filter(volume.astype(np.float64), 1.5, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(blurred.numpy(), expected, atol=1e-5)
    thin = volume[:4]  # an axis no longer than the radius (5) is replicated instead
    blurred = gaussian_blur(torch.from_numpy(thin)[None, None], gaussian_kernel(1.5))[0, 0]
    expected = ndimage.gaussian_filter(
        thin.astype(np.float64), 1.5, mode=("nearest", "mirror", "mirror"), truncate=3.0
    )
    np.testing.assert_allclose(blurred.numpy(), expected, atol=1e-5)


def test_held_out_rows_leave_enough_to_train_and_are_multiples():
    assert held_out_rows(48, 4) == 4
    assert held_out_rows(128, 4) == 16
    assert held_out_rows(1440, 8) == 32
    assert held_out_rows(16, 8) == 0  # too small: validate in-sample


def test_training_region_excludes_the_held_out_rows(validation):
    source, _ = validation
    region = training_region(source, 4)
    assert region.shape == (source.shape[0], source.shape[1] - 4, source.shape[2])
    np.testing.assert_array_equal(region.read((slice(0, 2),) * 3), source.read((slice(0, 2),) * 3))


def test_gaussian_losses_track_the_true_error_and_pick_a_near_best_sigma(tomogram, validation):
    source, valid = validation
    scale = source.normalisation.scale
    clean = torch.from_numpy(
        np.ascontiguousarray(
            (tomogram.target - source.normalisation.offset) / scale, dtype=np.float32
        )
    )
    ny = source.shape[1]
    rows = slice(ny - valid.noisy.shape[-2], ny)
    window_target = clean[None, None][:, :, :, rows, :]
    estimated, true = [], []
    for sigma in (0.75, 1.5, 3.0):
        taps = gaussian_kernel(sigma)
        loss = valid.loss(lambda x, t=taps: gaussian_blur(x, t))
        estimated.append(loss - 2 * float(valid.noise[valid.scored].pow(2).mean()))  # α 1
        outs = torch.cat([gaussian_blur(x[None], taps) for x in valid.inputs])
        true.append(float(((outs - window_target) ** 2)[valid.scored].mean()))
    # σ 1.5 and 3 are within 4 % of each other here; the far worse σ 0.75 must rank last,
    # and the σ the loss picks must be as good as the truth's best to within 5 %
    assert np.argmax(estimated) == np.argmax(true) == 0
    assert true[int(np.argmin(estimated))] <= 1.05 * min(true)
    np.testing.assert_allclose(estimated, true, rtol=0.25)


def test_gaussian_for_the_input_is_near_the_oracle(tomogram, validation):
    _, valid = validation
    _, oracle, _ = best_gaussian(tomogram.noisy, tomogram.target, np.array(SIGMAS))
    sigma, risk = valid.best_gaussian_for_input()
    assert abs(sigma - oracle) <= 0.5
    # the recorrupted input is noisier, so its best filter is at least as wide
    assert valid.best_gaussian()[0] >= sigma
    # the same estimate for any predictor
    taps = gaussian_kernel(sigma)
    assert valid.risk(lambda x: gaussian_blur(x, taps)) == pytest.approx(risk, rel=1e-4)


def test_risk_tracks_the_true_error_of_non_linear_estimators(tomogram, validation):
    source, valid = validation
    norm = source.normalisation
    clean = (tomogram.target - norm.offset) / norm.scale
    ny = source.shape[1]
    window = clean[None, None, :, ny - valid.shape[1] :, :].astype(np.float32)
    target = torch.from_numpy(np.ascontiguousarray(window))
    blur = gaussian_kernel(1.5)

    def shrunk(strength: float):  # keeps large deviations from the blur: non-linear
        def predict(x: torch.Tensor) -> torch.Tensor:
            smooth = gaussian_blur(x, blur)
            detail = x - smooth
            return smooth + detail * torch.tanh((detail / strength) ** 2)

        return predict

    estimated, true = [], []
    for strength in (1.0, 2.0, 4.0):
        predict = shrunk(strength)
        estimated.append(valid.risk(predict))
        with torch.no_grad():
            true.append(float((predict(valid.noisy) - target)[valid.scored].pow(2).mean()))
    # σ 1.5 and 3 are within 4 % of each other here; the far worse σ 0.75 must rank last,
    # and the σ the loss picks must be as good as the truth's best to within 5 %
    assert np.argmax(estimated) == np.argmax(true) == 0
    assert true[int(np.argmin(estimated))] <= 1.05 * min(true)
    np.testing.assert_allclose(estimated, true, rtol=0.25)


def test_an_untrained_network_falls_back_to_the_gaussian_and_says_so(tomogram, tmp_path):
    config = NMSGConfig(train_steps=1, base_sigma=0.0, crop=16, tile=32, overlap=8)
    events = []
    model = run_events(iter_fit_denoiser(tomogram.noisy, config), events.append)
    q = model.quality
    assert q.fell_back and q.held_out
    assert model.config.base_sigma == q.gaussian_sigma > 0 and model.config.pairing == "r2r"
    assert q.gain_over_gaussian_db == 0.0 and q.loss == q.gaussian_loss
    assert "the filter was returned" in q.summary()
    assert any(getattr(e, "stage", "") == "validate" for e in events)
    # the fallback network is exactly that Gaussian
    x = torch.from_numpy(tomogram.noisy[None, None, :32, :32, :32].copy())
    with torch.no_grad():
        got = model.denoiser(x)[0, 0].numpy()
    expected = gaussian_blur(x, gaussian_kernel(model.config.base_sigma))[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    again = load_model(save_model(model, tmp_path / "m.pt"))
    assert again.quality == q
    assert again.denoiser.base_sigma == model.config.base_sigma


def _loud_noise() -> SpectralNoise:
    """White model noise 10x the real one (after the amplitude map's clip, still 5x)."""
    loud = np.zeros((3, 3, 3), np.float32)
    loud[1, 1, 1] = 10.0
    return SpectralNoise(torch.from_numpy(loud))


def test_a_noise_model_that_does_not_fit_makes_the_estimate_untrustworthy(tomogram):
    """A spectral fit far too loud: the risks come out negative, and the estimate says it
    is not to be trusted; the learned model's estimate is not flagged."""
    config = NMSGConfig(noise_model="spectral", train_steps=4, crop=16, tile=32, overlap=8)
    learned = run_events(iter_learn_noise_from([prepare_volume(tomogram.noisy, config)], config))
    loud = _loud_noise()
    wrong = dataclasses.replace(learned, noise_model=loud, spectral_model=loud)
    for noise, flagged in ((learned, False), (wrong, True)):
        q = run_events(iter_fit_denoiser(tomogram.noisy, config, noise=noise)).quality
        assert q.implausible is flagged
        assert ("not to be trusted" in q.summary()) is flagged
        assert ("not to be trusted" in quality_label(q.to_dict())) is flagged
    assert q.loss < 0  # a squared error estimated below zero


def test_the_estimate_judges_with_the_spectral_fit_whichever_model_trains(tomogram):
    """Stein's estimate needs the noise's covariance, which the spectral fit matches
    directly; a GAN's power was measured 2.3 % high, enough for a risk below zero and
    +14 dB claimed. A training model that is far off leaves the estimate sound."""
    config = NMSGConfig(noise_model="spectral", train_steps=4, crop=16, tile=32, overlap=8)
    learned = run_events(iter_learn_noise_from([prepare_volume(tomogram.noisy, config)], config))
    trained_on_loud = dataclasses.replace(learned, noise_model=_loud_noise())
    judged = run_events(iter_fit_denoiser(tomogram.noisy, config, noise=learned)).quality
    q = run_events(iter_fit_denoiser(tomogram.noisy, config, noise=trained_on_loud)).quality
    assert not q.implausible and q.loss > 0
    # the same Gaussian, judged with the same model noise
    assert (q.gaussian_sigma, q.gaussian_loss) == (judged.gaussian_sigma, judged.gaussian_loss)


def test_a_trained_network_beats_the_gaussian_in_the_estimate_and_in_truth(tomogram):
    config = NMSGConfig(train_steps=150, crop=24, tile=48, overlap=8)
    model = run_events(iter_fit_denoiser(tomogram.noisy, config))
    q = model.quality
    assert not q.fell_back
    assert q.gain_over_gaussian_db > 0 and q.loss < q.gaussian_loss
    # a little wider than the recorrupted input's best, which is wider than the input's
    assert model.config.base_sigma >= BASE_WIDENING * q.gaussian_sigma
    truth = psnr(run_events(iter_denoise(tomogram.noisy, model)), tomogram.target)
    assert truth > best_gaussian(tomogram.noisy, tomogram.target)[0]


def test_quarter_turns_follow_the_best_gaussian_unless_set(tomogram):
    """Auto trains on in-plane quarter turns where the Gaussian best for the training input
    is 2 voxels or wider, and flips only where fine detail stands above the noise."""
    config = NMSGConfig(train_steps=1, crop=16, tile=32, overlap=8, gaussian_fallback=False)
    detailed = simulate_tomogram((48, 48, 48), snr=0.3, crowding=3.0, voxel_size=14.0, seed=11)
    for volume, turns in ((tomogram.noisy, True), (detailed.noisy, False)):
        model = run_events(iter_fit_denoiser(volume, config))
        assert model.config.quarter_turns is turns and model.config.turns is turns
    kept = run_events(iter_fit_denoiser(detailed.noisy, config.replace(quarter_turns=True)))
    assert kept.config.quarter_turns is True
    assert kept.config.base_sigma == model.config.base_sigma  # still chosen by the validation


def test_auto_takes_the_base_from_the_filled_copies_and_the_turns_from_the_fit(validation):
    """The base σ follows the copies recorrupted with the filled low band; the quarter
    turns follow copies recorrupted with the fit itself, the scale their threshold was
    chosen on (the filled copies find a wider Gaussian)."""
    source, valid = validation
    learned = run_events(iter_learn_noise_from([source], NMSGConfig(seed=0)))
    filled = RecorruptedValidation(
        source, learned.spectral_model, None, 1.0, 4, 4, torch.device("cpu"), seed=0,
        recorrupting=learned.validation_model,
    )  # fmt: skip
    fit_sigma = filled.best_gaussian_recorrupted_with_fit()
    assert fit_sigma == valid.best_gaussian()[0]  # the fit's own copies: as before
    assert filled.best_gaussian()[0] > fit_sigma
    resolved = _resolve_auto(NMSGConfig(seed=0), filled)
    assert resolved.base_sigma == BASE_WIDENING * filled.best_gaussian()[0]
    assert resolved.quarter_turns is quarter_turns_for(fit_sigma)


def test_the_risk_subtracts_the_expected_noise_power_not_the_probes_own(validation):
    """The probes' own power varies from draw to draw by a share of a good denoiser's risk
    (on 128³ suite cases: a Gaussian's risk spread 7-8x wider over validation seeds); the
    model's expected power, where the amplitude map puts it, does not."""
    source, valid = validation
    noise = run_events(iter_learn_noise_from([source], NMSGConfig(seed=0))).spectral_model
    variance = noise.voxel_variance()
    probes = np.mean([float(w[valid.scored].pow(2).mean()) for w in valid.probes])
    assert valid.noise_power == pytest.approx(variance, rel=1e-6)  # no amplitude map
    assert valid.noise_power != pytest.approx(probes, rel=1e-4)
    amplitude = np.ones([n // 4 for n in source.shape], np.float32)
    amplitude[:, -1] = 2.0  # the last 4 rows, the held-out ones, are twice as noisy
    louder = RecorruptedValidation(source, noise, amplitude, 1.0, 4, 4, torch.device("cpu"), 0)
    assert louder.noise_power == pytest.approx(4 * variance, rel=1e-6)


def test_copies_are_recorrupted_with_the_validation_model_and_probed_with_the_fit(validation):
    """The recorrupted copies (base σ, quarter turns, weight average) take the fit with the
    search's low-band deficit filled; Stein's probes and noise power stay the fit's own."""
    source, valid = validation
    learned = run_events(iter_learn_noise_from([source], NMSGConfig(seed=0)))
    fitted, filled = learned.spectral_model, learned.validation_model
    assert filled.voxel_variance() > fitted.voxel_variance()  # only ever raised
    loud = _loud_noise()
    split = RecorruptedValidation(
        source, fitted, None, 1.0, 4, 4, torch.device("cpu"), seed=0, recorrupting=loud
    )
    z = split.inputs[:1] - split.noisy  # α 1
    assert float(z.pow(2).mean()) == pytest.approx(loud.voxel_variance(), rel=0.05)
    assert float(valid.noise.pow(2).mean()) < 0.1 * loud.voxel_variance()
    for mine, theirs in zip(split.probes, valid.probes, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert split.noise_power == valid.noise_power


def test_validation_refuses_a_gan(tomogram):
    config = NMSGConfig(noise_model="gan", gan_steps=2, gan_batch=4, seed=0)
    source = prepare_volume(tomogram.noisy, config)
    learned = run_events(iter_learn_noise_from([source], config))
    assert learned.noise_model.kind == "gan" and learned.spectral_model.kind == "spectral"
    with pytest.raises(ValueError, match="spectral fit"):
        RecorruptedValidation(
            source, learned.noise_model, None, 1.0, 4, 4, torch.device("cpu"), seed=0
        )


def test_over_smoothing_is_flagged(validation):
    _, valid = validation
    assert not valid.over_smoothed(lambda x: x)  # nothing removed
    assert not valid.over_smoothed(lambda x: gaussian_blur(x, gaussian_kernel(1.0)))
    assert valid.over_smoothed(lambda x: gaussian_blur(x, gaussian_kernel(8.0)))


def test_the_recorrupted_loss_predicts_both_copies_in_one_batch(validation):
    """As inference does with its pairs (see ``average_over_pairs``), and with the loss of
    one copy at a time."""
    _, valid = validation
    taps = gaussian_kernel(1.5)
    batches = []

    def blur(x: torch.Tensor) -> torch.Tensor:
        batches.append(len(x))
        return gaussian_blur(x, taps)

    loss = valid.loss(blur)
    each = [
        float(((gaussian_blur(x[None], taps) - t[None])[valid.scored] ** 2).mean())
        for x, t in zip(valid.inputs, valid.targets, strict=True)
    ]
    assert batches == [2]
    assert loss == pytest.approx(np.mean(each), rel=1e-5)
