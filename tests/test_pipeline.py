import json

import numpy as np
import pytest
import torch

from napari_nmsg import denoise, fit_denoiser, learn_noise
from napari_nmsg.engine import (
    NMSGConfig,
    Preview,
    Progress,
    iter_denoise,
    iter_fit_denoiser,
    iter_run,
    load_model,
    run_events,
    save_model,
)
from napari_nmsg.errors import InputError
from napari_nmsg.metrics import psnr


def test_events_cover_every_stage_and_previews_follow_the_requested_slice(
    small_tomogram, tiny_config
):
    events = []
    run_events(
        iter_fit_denoiser(small_tomogram.noisy, tiny_config, preview_position=lambda: 20),
        events.append,
    )
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert stages.index("noise-patches") < stages.index("noise-model") < stages.index("train")
    previews = [e for e in events if isinstance(e, Preview)]
    # due every preview_every steps, and held to a tenth of the time: the first always shows
    assert 1 <= len(previews) <= tiny_config.train_steps // tiny_config.preview_every
    region = previews[0].region
    assert region[0].start <= 20 < region[0].stop and region[1] == slice(0, 32)
    assert previews[0].array.shape == tuple(r.stop - r.start for r in region)
    assert np.isfinite(previews[0].array).all()


def test_a_preview_the_gpu_has_no_memory_for_is_skipped_and_the_fit_goes_on(
    small_tomogram, tiny_config, monkeypatch
):
    from napari_nmsg.engine import previews

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")

    monkeypatch.setattr(previews, "iter_predict_tiled", out_of_memory)
    events = []
    config = tiny_config.replace(noise_model="spectral")
    model = run_events(
        iter_fit_denoiser(small_tomogram.noisy, config, preview_position=lambda: 20),
        events.append,
    )
    assert not [e for e in events if isinstance(e, Preview)]
    assert [e for e in events if isinstance(e, Progress) and e.stage == "validate"]
    assert model.quality is not None


def test_same_seed_same_result_and_another_seed_differs(small_tomogram, tiny_config):
    # four steps lose to the validated Gaussian, which is the same for every seed
    config = tiny_config.replace(gaussian_fallback=False)
    first = denoise(small_tomogram.noisy, config=config)
    again = denoise(small_tomogram.noisy, config=config)
    other = denoise(small_tomogram.noisy, config=config.replace(seed=1))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4


def test_output_keeps_shape_dtype_and_intensity_scale(small_tomogram, tiny_config):
    noisy = small_tomogram.noisy[:, :24, :]  # non-cubic; wedge axis detected as Y
    out = denoise(noisy, config=tiny_config)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert abs(out.mean() - noisy.mean()) < 0.2 * noisy.std()


def test_save_load_round_trip_gives_identical_output(tmp_path, small_tomogram, tiny_config):
    model = fit_denoiser(small_tomogram.noisy, tiny_config)
    path = save_model(model, tmp_path / "model.pt")
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.noise_model.kind == "gan"
    np.testing.assert_array_equal(
        denoise(small_tomogram.noisy, loaded), denoise(small_tomogram.noisy, model)
    )


def test_additive_skips_round_trip_and_older_models_load_concatenating(
    tmp_path, small_tomogram, tiny_config
):
    config = tiny_config.replace(noise_model="spectral")
    additive = fit_denoiser(small_tomogram.noisy, config.replace(additive_skips=True))
    merge_inputs = additive.denoiser.merge[0][0].in_channels
    assert merge_inputs == config.unet_width  # the sum, not the concatenation
    loaded = load_model(save_model(additive, tmp_path / "additive.pt"))
    assert loaded.denoiser.additive_skips and loaded.config.additive_skips
    np.testing.assert_array_equal(
        denoise(small_tomogram.noisy, loaded), denoise(small_tomogram.noisy, additive)
    )
    # a model saved before the setting existed: no such key in its U-Net or its settings
    concatenating = fit_denoiser(small_tomogram.noisy, config)
    payload = torch.load(save_model(concatenating, tmp_path / "c.pt"), weights_only=True)
    meta = json.loads(payload["meta"])
    del meta["unet_args"]["additive_skips"], meta["config"]["additive_skips"]
    payload["meta"] = json.dumps(meta)
    torch.save(payload, tmp_path / "older.pt")
    older = load_model(tmp_path / "older.pt")
    assert older.denoiser.merge[0][0].in_channels == 2 * config.unet_width
    np.testing.assert_array_equal(
        denoise(small_tomogram.noisy, older), denoise(small_tomogram.noisy, concatenating)
    )


class Payload:
    """An arbitrary pickled object: loading must refuse it rather than unpickle it."""


def test_foreign_or_mismatched_checkpoints_are_refused(tmp_path, small_tomogram, tiny_config):
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="not a napari-nmsg model"):
        load_model(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a napari-nmsg model"):
        load_model(tmp_path / "other.pt")
    model = fit_denoiser(small_tomogram.noisy, tiny_config.replace(noise_model="spectral"))
    path = save_model(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(InputError, match="format version 99"):
        load_model(tmp_path / "future.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="cannot read model"):
        load_model(tmp_path / "garbage.pt")


def test_unavailable_device_and_bad_settings_are_clear_errors(small_tomogram):
    with pytest.raises(InputError, match="not available"):
        learn_noise(small_tomogram.noisy, NMSGConfig(device="cuda:7" if torch.cuda.is_available()
                                                      else "cuda"))  # fmt: skip
    with pytest.raises(ValueError, match="alpha"):
        NMSGConfig(alpha=0.5)
    with pytest.raises(ValueError, match="unknown preset"):
        NMSGConfig.preset("turbo")


@pytest.mark.parametrize("pairing", ["paper", "noisier2noise"])
def test_alternative_pairings_run(small_tomogram, tiny_config, pairing):
    pairs = 0 if pairing == "paper" else 1  # the paper's inference is one pass f(y)
    config = tiny_config.replace(pairing=pairing, inference_pairs=pairs)
    out = denoise(small_tomogram.noisy, config=config)
    assert np.isfinite(out).all() and out.shape == small_tomogram.noisy.shape


def test_loss_terms_are_reported_when_enabled(small_tomogram, tiny_config):
    events = []
    config = tiny_config.replace(lambda_grad=0.1, lambda_gui=0.5, noise_model="spectral")
    fit_denoiser(small_tomogram.noisy, config, on_event=events.append)
    last = [e for e in events if isinstance(e, Progress) and e.stage == "train"][-1]
    assert {"rec", "grad", "gui", "loss"} <= set(last.metrics)
    expected = last.metrics["rec"] + 0.1 * last.metrics["grad"] + 0.5 * last.metrics["gui"]
    assert last.metrics["loss"] == pytest.approx(expected, rel=1e-4)


def test_real_denoising_on_a_tiny_simulated_tomogram():
    """End-to-end quality: a clear gain over the noisy input against the noiseless target."""
    from napari_nmsg.simulate import simulate_tomogram

    sim = simulate_tomogram((48, 48, 48), snr=0.1, seed=7)
    config = NMSGConfig.preset("fast", train_steps=300, noise_model="spectral", tile=48)
    out = denoise(sim.noisy, config=config)
    # PSNR after an affine intensity fit, which already favours the noisy input: measured
    # +0.95 dB here (the oracle Gaussian gets +2.7 dB on a volume this small)
    gain = psnr(out, sim.target) - psnr(sim.noisy, sim.target)
    assert gain >= 0.5, gain


def test_iter_run_is_learn_fit_denoise_chained_and_skips_what_is_given(small_tomogram):
    volume = small_tomogram.noisy
    config = NMSGConfig(train_steps=3, crop=16, tile=16, overlap=4, inference_pairs=1)
    model = run_events(iter_fit_denoiser(volume, config))
    by_hand = run_events(iter_denoise(volume, model))
    handed = []
    run = run_events(iter_run(volume, config, out=lambda m: handed.append(m) or None))
    assert handed == [run.model] and run.noise is not None
    np.testing.assert_array_equal(run.output, by_hand)  # the same seed, the same steps

    stages = []
    again = run_events(
        iter_run(volume, config, model=model), lambda e: stages.append(getattr(e, "stage", ""))
    )
    assert set(stages) == {"denoise"} and again.noise is None  # no learning, no training
    np.testing.assert_array_equal(again.output, by_hand)


def test_a_given_model_denoises_with_its_own_inference_settings(small_tomogram):
    volume = small_tomogram.noisy
    paired = NMSGConfig(train_steps=3, crop=16, tile=16, overlap=4, inference_pairs=2)
    model = run_events(iter_fit_denoiser(volume, paired))
    own = run_events(iter_denoise(volume, model))
    # the API's default config (the fast preset) supplies the machine only, not the inference
    np.testing.assert_array_equal(denoise(volume, model), own)
    one_pass = run_events(
        iter_run(volume, NMSGConfig(), model=model, overrides={"inference_pairs": 0})
    )
    assert not np.array_equal(one_pass.output, own)
    assert run_events(iter_run(volume, NMSGConfig(), model=model)).model is model


def test_previews_of_a_wide_plane_show_its_centre():
    from napari_nmsg.engine.previews import PREVIEW_PLANE, slab_region
    from napari_nmsg.engine.volume import Normalisation, NormalisedVolume

    source = NormalisedVolume(np.zeros((20, 500, 90), np.float32), Normalisation(0, 1, 0))
    shown, _, inner = slab_region(10, source, NMSGConfig(), 4)
    assert shown[1] == slice((500 - PREVIEW_PLANE) // 2, (500 - PREVIEW_PLANE) // 2 + PREVIEW_PLANE)
    assert shown[2] == slice(0, 90)  # narrower than the bound: whole
    assert [i.stop - i.start for i in inner] == [s.stop - s.start for s in shown]


def test_previews_are_spaced_to_a_tenth_of_the_time(monkeypatch):
    from napari_nmsg.engine import previews

    clock = [0.0]
    monkeypatch.setattr(previews.time, "perf_counter", lambda: clock[0])
    budget = previews.PreviewBudget()

    def preview(seconds: float):
        clock[0] += seconds
        yield "preview"

    assert budget.due() and list(budget.spend(preview(0.1))) == ["preview"]
    clock[0] += 0.85
    assert not budget.due()  # even a cheap preview waits for 9x its time of training
    clock[0] += 0.1
    assert budget.due()
    list(budget.spend(preview(2.0)))
    clock[0] += 17.9
    assert not budget.due()  # 2 s of preview wants 18 s of training first
    clock[0] += 0.2
    assert budget.due()
