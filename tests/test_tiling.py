import dataclasses

import numpy as np
import pytest
import torch

from napari_nmsg.engine import NMSGConfig, NMSGModel, iter_denoise, run_events
from napari_nmsg.engine.device import (
    conv_memory_format,
    inference_dtype,
    native_bfloat16_cpu,
    tile_batch_for,
)
from napari_nmsg.engine.noise_model import SpectralNoise
from napari_nmsg.engine.pairs import average_over_pairs
from napari_nmsg.engine.symmetry import apply_symmetry, inplane_symmetry, undo_symmetry
from napari_nmsg.engine.tiling import blend_window, iter_predict_tiled, tile_grid, tile_starts
from napari_nmsg.engine.unet import UNet3D
from napari_nmsg.engine.volume import NormalisedVolume, fit_normalisation


@pytest.mark.parametrize(("length", "tile", "overlap"), [(50, 16, 4), (16, 16, 4), (10, 16, 4)])
def test_tile_starts_cover_the_axis(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[0] == 0
    assert max(starts) + min(tile, length) == length or length < tile


@pytest.mark.parametrize("length", [8, 37, 64, 65, 100, 128, 129, 400, 1440])
@pytest.mark.parametrize("multiple", [1, 2, 4])
def test_tile_grid_covers_each_axis_with_as_few_tiles_no_larger(length, multiple):
    (axis,) = tile_grid((length,), 64, 16, multiple)
    covered = np.zeros(length, bool)
    for s in axis.starts:
        covered[s : s + axis.size] = True
    assert covered.all()
    assert axis.size % multiple == 0 and axis.size <= max(64, -(-length // multiple) * multiple)
    assert len(axis.starts) == len(tile_starts(length, min(64, length), 16))
    assert axis.overlap == min(16, axis.size // 2)
    # a tile one multiple smaller would need another tile
    if len(axis.starts) > 1:
        smaller = axis.size - multiple
        assert len(tile_starts(length, smaller, min(16, smaller // 2))) > len(axis.starts)


def test_tile_grid_shrinks_tiles_that_overshoot_the_volume():
    """128 voxels in 64-voxel tiles overlapping by 16 take three tiles; 56 voxels do too."""
    grid = tile_grid((128, 128, 128), 64, 16, 4)
    assert [(a.size, a.starts) for a in grid] == [(56, [0, 40, 72])] * 3


def test_blend_window_ramps_and_never_vanishes():
    w = blend_window(16, 4)
    assert w[8] == 1 and w[0] < 0.2 and w.min() > 0
    np.testing.assert_allclose(w, w[::-1])


@pytest.mark.parametrize("shape", [(20, 37, 29), (16, 16, 16), (40, 24, 24)])
def test_identity_prediction_through_tiles_returns_the_input(shape):
    raw = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    source = NormalisedVolume(raw, fit_normalisation(raw))
    out = np.zeros(source.shape, np.float32)

    def write(z, block):
        out[z] = block

    run_events(
        iter_predict_tiled(
            lambda x, corners: x, source, write, tile=16, overlap=4, batch=3, multiple=4,
            device=torch.device("cpu"),
        )
    )  # fmt: skip
    np.testing.assert_allclose(out, source.read(), atol=1e-5)


def _random_model(seed: int = 0) -> NMSGModel:
    torch.manual_seed(seed)
    net = UNet3D(depth=2, width=4)
    torch.nn.init.normal_(net.head.weight, std=0.3)
    config = NMSGConfig(unet_width=4, tile=16, overlap=6, tile_batch=2)
    raw = np.zeros((2, 2, 2), np.float32)
    return NMSGModel(config, SpectralNoise(torch.zeros(3, 3, 3)), net.eval(), fit_normalisation(
        np.random.default_rng(0).normal(size=(16, 16, 16)) + raw[0, 0, 0]))  # fmt: skip


def test_denoise_uses_a_given_normalisation_instead_of_the_volumes_own():
    """How the benchmark denoises each N2N half with the full volume's statistics."""
    raw = np.random.default_rng(5).normal(size=(16, 32, 32)).astype(np.float32)
    model = _random_model()
    own = fit_normalisation(raw)
    default = run_events(iter_denoise(raw, model))
    np.testing.assert_array_equal(run_events(iter_denoise(raw, model, normalisation=own)), default)
    wider = dataclasses.replace(own, scale=own.scale * 2)
    other = run_events(iter_denoise(raw, model, normalisation=wider))
    assert np.abs(other - default).mean() > 0.05 * np.abs(default - raw).mean()


def test_no_seams_error_at_tile_borders_no_larger_than_inside():
    """Tiled vs one-pass prediction of a non-trivial net: differences stay tiny at seams.

    (The benchmark checks the error against the ground truth at tile borders vs inside.)"""
    raw = np.random.default_rng(2).normal(size=(32, 48, 48)).astype(np.float32)
    model = _random_model()
    tiled = run_events(iter_denoise(raw, model))
    whole = run_events(iter_denoise(raw, model, config=model.config.replace(tile=48, overlap=0)))
    err = np.abs(tiled - whole)
    # interior tile seams along Y and X at the overlap centres (starts every 10 voxels)
    (axis,) = tile_grid((48,), 16, 6, model.denoiser.multiple)  # the grid the engine cut
    seam = sorted({s + 3 for s in axis.starts[1:]})
    seam_err = err[:, seam, :].mean()
    inside = np.delete(err, [s + d for s in seam for d in (-1, 0, 1)], axis=1).mean()
    # the net sees less context near a tile's edge; blending keeps that far below the signal
    assert seam_err <= 3 * inside
    assert err.mean() < 0.05 * np.abs(whole - raw).mean()


def test_memory_mapped_output_equals_in_memory(tmp_path):
    raw = np.random.default_rng(3).normal(size=(24, 40, 36)).astype(np.float32)
    model = _random_model(1)
    in_memory = run_events(iter_denoise(raw, model))
    mm = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32,
                                   shape=raw.shape)  # fmt: skip
    run_events(iter_denoise(raw, model, out=mm))
    np.testing.assert_array_equal(np.asarray(mm), in_memory)


def test_space_to_depth_unet_keeps_shape_and_round_trips():
    from napari_nmsg.engine.unet import depth_to_space, space_to_depth

    x = torch.randn(2, 1, 8, 12, 16)
    assert torch.equal(depth_to_space(space_to_depth(x)), x)
    net = UNet3D(depth=2, width=4, space_to_depth=True)
    assert net.multiple == 8
    assert net(torch.randn(1, 1, 16, 24, 16)).shape == (1, 1, 16, 24, 16)


def test_identity_through_tiles_when_flushed_plane_by_plane(monkeypatch):
    """Small flush chunks (as for huge planes) and a tile row that wraps give the same."""
    from napari_nmsg.engine import tiling

    monkeypatch.setattr(tiling, "_FLUSH_BYTES", 1)
    raw = np.random.default_rng(4).normal(size=(45, 20, 18)).astype(np.float32)
    source = NormalisedVolume(raw, fit_normalisation(raw))
    out = np.full(source.shape, np.nan, np.float32)

    def write(z, block):
        assert z.stop - z.start == 1
        out[z] = block

    run_events(
        iter_predict_tiled(
            lambda x, corners: 2 * x, source, write, tile=16, overlap=6, batch=4, multiple=4,
            device=torch.device("cpu"),
        )
    )  # fmt: skip
    np.testing.assert_allclose(out, 2 * source.read(), atol=1e-5)


def test_amp_override_switches_cpu_inference_to_bfloat16():
    """``amp`` given at inference time takes effect (it once silently did not)."""
    raw = np.random.default_rng(5).normal(size=(16, 32, 32)).astype(np.float32)
    model = _random_model(2)
    full = run_events(iter_denoise(raw, model, config=model.config.replace(amp=False)))
    mixed = run_events(iter_denoise(raw, model, config=model.config.replace(amp=True)))
    change = np.abs(full - raw).mean()
    assert not np.array_equal(full, mixed)
    assert np.abs(full - mixed).mean() < 0.05 * change  # bfloat16 rounds only the correction


def test_auto_mixed_precision_only_where_it_is_native():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert inference_dtype(cuda, None) == torch.float16
    native = torch.bfloat16 if native_bfloat16_cpu() else None
    assert inference_dtype(cpu, None) == native
    assert inference_dtype(cpu, True) == torch.bfloat16
    assert inference_dtype(cpu, False) is None and inference_dtype(cuda, False) is None


def test_mixed_precision_rounds_the_correction_but_never_the_gaussian_base():
    net = UNet3D(depth=1, width=4, base_sigma=1.5).eval()  # untrained: exactly the Gaussian
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        full = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, rtol=0, atol=0)


def test_layouts_channels_last_where_measured_faster():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert conv_memory_format(cpu) == conv_memory_format(cpu, training=True)
    assert conv_memory_format(cpu) == torch.channels_last_3d
    assert conv_memory_format(cuda) == torch.channels_last_3d  # inference, measured on an H200
    assert conv_memory_format(cuda, training=True) == torch.contiguous_format
    assert conv_memory_format(mps) == torch.contiguous_format


def test_tile_batch_auto_is_larger_on_cuda_and_a_given_one_is_kept():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert tile_batch_for(cuda, None) == 8 and tile_batch_for(cpu, None) == 2
    assert tile_batch_for(cuda, 3) == 3 and tile_batch_for(cpu, 5) == 5


def test_inference_leaves_the_callers_model_as_it_was():
    """The predictor works on copies: the model's own modules keep their device and layout
    (on a GPU, moving them would leave the caller's model there)."""
    model = dataclasses.replace(_random_model(), config=NMSGConfig(tile=16, inference_pairs=1))
    volume = np.random.default_rng(6).normal(size=(16, 32, 32)).astype(np.float32)
    before = {k: (v.device, v.stride()) for k, v in model.denoiser.state_dict().items()}
    run_events(iter_denoise(volume, model))
    after = {k: (v.device, v.stride()) for k, v in model.denoiser.state_dict().items()}
    assert after == before
    assert all(v.is_contiguous() for v in model.denoiser.state_dict().values())


def test_auto_mixed_precision_is_off_where_onednn_is_capped_below_bfloat16(monkeypatch):
    """oneDNN capped to AVX2 emulates bfloat16: 40x slower than float32 on an AMX Xeon."""
    cpu = torch.device("cpu")
    hardware = native_bfloat16_cpu()
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.setenv(name, "avx2")
        assert not native_bfloat16_cpu() and inference_dtype(cpu, None) is None
        assert inference_dtype(cpu, True) == torch.bfloat16  # asked for, it is still given
        monkeypatch.setenv(name, "AVX512_CORE_AMX")
        assert native_bfloat16_cpu() == hardware
        monkeypatch.delenv(name)


def _noise_model(seed: int = 0) -> SpectralNoise:
    kernel = torch.from_numpy(np.random.default_rng(seed).normal(size=(5, 5, 5)).astype(np.float32))
    return SpectralNoise(kernel / kernel.norm())


def test_antithetic_pairs_cancel_the_added_noise_for_a_linear_network():
    """An untrained U-Net is the identity: ½(f(y + z) + f(y − z)) must give y back exactly,
    which only holds if both passes of a pair share the same z."""
    raw = np.random.default_rng(8).normal(size=(16, 32, 32)).astype(np.float32)
    base = _random_model()
    identity = UNet3D(depth=2, width=4).eval()
    model = NMSGModel(base.config.replace(inference_pairs=3), _noise_model(), identity,
                      base.normalisation)  # fmt: skip
    out = run_events(iter_denoise(raw, model))
    np.testing.assert_allclose(out, raw, atol=1e-4)


def test_averaged_pairs_do_not_depend_on_how_tiles_are_batched():
    """Each tile's recorrupting noise comes from its place: a larger tile batch (or a retry
    with a smaller one after the GPU ran out of memory) gives the same voxels, up to the
    rounding of convolutions batched differently (a single tile's ± copies share a batch;
    up to 2e-5 on an AMX Xeon), far less than other draws change them."""
    raw = np.random.default_rng(9).normal(size=(16, 40, 40)).astype(np.float32)
    base = _random_model()
    model = dataclasses.replace(base, config=base.config.replace(inference_pairs=2),
                                noise_model=_noise_model())  # fmt: skip
    outputs = [
        run_events(iter_denoise(raw, model, config=model.config.replace(tile_batch=n)))
        for n in (1, 3, 8)
    ]
    assert not np.array_equal(outputs[0], run_events(iter_denoise(raw, base)))  # pairs differ
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4)
    np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-4)
    reseeded = dataclasses.replace(model, config=model.config.replace(seed=1))
    assert np.abs(run_events(iter_denoise(raw, reseeded)) - outputs[0]).max() > 1e-3


@pytest.mark.parametrize(("windows", "batches"), [(1, [2, 2, 2]), (2, [2] * 6)])
def test_a_single_windows_pair_goes_through_the_network_as_one_batch(windows, batches):
    """The validation's one window sends its ±z copies as one batch (a float32 CPU
    convolution of batch 1 can fall to PyTorch's slow reference kernel); a batch of tiles
    goes one sign at a time. Either way it is the mean of one window and sign at a time."""
    net = _random_model(4).denoiser
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(windows, 1, 8, 16, 24)).astype("f4"))
    draws = [0.3 * torch.randn_like(x[:1]) for _ in range(3)]
    seen = []

    def run(batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        return net(batch)

    with torch.no_grad():
        out = average_over_pairs(run, x, draws, turns=True)
        one_at_a_time = [
            undo_symmetry(net(apply_symmetry(window + sign * z, *symmetry)), *symmetry)
            for window in x.split(1)
            for k, z in enumerate(draws)
            for symmetry in [inplane_symmetry(k, turns=False)]  # x is not square
            for sign in (1, -1)
        ]
    assert seen == batches
    assert torch.abs(out - x).mean() > 1e-3  # the network is not the identity
    expected = torch.cat(one_at_a_time).reshape(windows, -1, *x.shape[1:]).mean(1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("turns", [True, False])
def test_inplane_symmetries_are_distinct_and_undone(turns):
    x = torch.arange(4 * 4 * 4, dtype=torch.float32).reshape(1, 1, 4, 4, 4)
    count = 8 if turns else 4
    moved = []
    for k in range(count):
        symmetry = inplane_symmetry(k, turns)
        assert turns or symmetry[1] == 0  # flips only: the tilt axis stays where it is
        y = apply_symmetry(x, *symmetry)
        assert torch.equal(undo_symmetry(y, *symmetry), x)
        assert torch.equal(y.sum(dim=(-2, -1)), x.sum(dim=(-2, -1)))  # planes stay planes
        moved.append(tuple(y.flatten().tolist()))
    assert len(set(moved)) == count


def test_inference_pairs_average_recorrupted_passes_reproducibly():
    raw = np.random.default_rng(9).normal(size=(16, 32, 32)).astype(np.float32)
    model = dataclasses.replace(_random_model(3), noise_model=_noise_model(1))
    single = run_events(iter_denoise(raw, model, config=model.config.replace(inference_pairs=0)))
    pairs = model.config.replace(inference_pairs=2)
    first = run_events(iter_denoise(raw, model, config=pairs))
    again = run_events(iter_denoise(raw, model, config=pairs))
    np.testing.assert_array_equal(first, again)  # the seed fixes the recorruptions
    assert np.abs(first - single).mean() > 1e-3 * np.abs(single - raw).mean()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pairing": "paper", "inference_pairs": 1}, "applied as f"),
        ({"pairing": "noisier2noise", "inference_pairs": 0}, "inference_pairs >= 1"),
        ({"inference_pairs": -1}, "inference_pairs=-1 must be at least 0"),
    ],
)
def test_inference_pairs_that_make_no_sense_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        NMSGConfig(**changes)


def test_input_is_released_once_per_band_of_tiles():
    raw = np.random.default_rng(6).normal(size=(40, 40, 40)).astype(np.float32)
    source = NormalisedVolume(raw, fit_normalisation(raw))
    calls = []
    run_events(
        iter_predict_tiled(
            lambda x, corners: x, source, lambda z, block: None, tile=16, overlap=4, batch=3,
            multiple=4, device=torch.device("cpu"), release_input=lambda: calls.append(1),
        )
    )  # fmt: skip
    assert len(calls) == 3 * 3  # 3 rows of tiles along Z × 3 bands along Y (starts 0, 12, 24)
