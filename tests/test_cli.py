import hashlib
import resource
import signal
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from napari_nmsg.cli import main
from napari_nmsg.engine import NMSGConfig, iter_denoise, load_model, run_events
from napari_nmsg.io import read_volume

FAST = ["--steps", "3", "--gan-steps", "1", "--crop", "16", "--tile", "16", "-q"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_denoise_writes_float32_with_voxel_size_and_leaves_input_alone(tmp_path, mrc_path, capsys):
    before = _digest(mrc_path)
    out = tmp_path / "out.mrc"
    model = tmp_path / "model.pt"
    assert main(["denoise", str(mrc_path), "-o", str(out), "--save-model", str(model), *FAST]) == 0
    assert _digest(mrc_path) == before
    # the self-supervised estimate is in the summary and in the output's labels
    assert "quality: estimated" in capsys.readouterr().out
    with mrcfile.open(out) as mrc:
        assert any("nmsg estimate" in str(label) for label in mrc.get_labels())
    with mrcfile.open(out) as mrc, mrcfile.open(mrc_path) as src:
        assert mrc.data.shape == src.data.shape and mrc.data.dtype == np.float32
        assert mrc.voxel_size.x == pytest.approx(13.7) and mrc.voxel_size.z == pytest.approx(13.7)
        assert mrc.header.origin.y == pytest.approx(20.0)
        assert any("napari-nmsg" in str(label) for label in mrc.get_labels())
    out2 = tmp_path / "out2.mrc"
    assert main(["denoise", str(mrc_path), "-o", str(out2), "--model", str(model), *FAST]) == 0
    with mrcfile.open(out) as a, mrcfile.open(out2) as b:
        np.testing.assert_array_equal(a.data, b.data)


def test_a_saved_model_denoises_with_its_own_inference_settings(tmp_path, mrc_path):
    """``--model`` runs with the model's pairs and tiles, not the ``--preset`` defaults
    (fast: one pass, 64³ tiles); an inference flag given on the command line still wins."""
    model_path = tmp_path / "model.pt"
    outs = {name: tmp_path / f"{name}.mrc" for name in ("fitted", "reused", "told")}
    train = ["--steps", "3", "--crop", "16", "--noise-model", "spectral", "--no-gaussian-fallback"]
    train.append("-q")
    own = ["--inference-pairs", "2", "--tile", "16", "--overlap", "4"]
    fit = ["denoise", str(mrc_path), "-o", str(outs["fitted"]), "--save-model", str(model_path)]
    assert main([*fit, *train, *own]) == 0
    reuse = ["denoise", str(mrc_path), "--model", str(model_path), "-q"]
    assert main([*reuse, "-o", str(outs["reused"])]) == 0
    assert main([*reuse, "-o", str(outs["told"]), "--inference-pairs", "0"]) == 0
    model = load_model(model_path)
    one_pass = model.config.replace(inference_pairs=0)  # tiles still the model's
    expected = run_events(iter_denoise(read_volume(mrc_path).data, model, config=one_pass))
    with mrcfile.open(outs["fitted"]) as a, mrcfile.open(outs["reused"]) as b:
        np.testing.assert_array_equal(a.data, b.data)
    with mrcfile.open(outs["told"]) as c:
        np.testing.assert_array_equal(c.data, expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["denoise", "{inp}", "-o", "{inp}"], "is the input file"),
        (["denoise", "{tmp}/absent.mrc", "-o", "{tmp}/o.mrc"], "no such file"),
        (["denoise", "{tmp}", "-o", "{tmp}/o.mrc"], "a folder, not a tomogram file"),
        (["denoise", "{inp}", "-o", "{tmp}/nowhere/o.mrc"], "does not exist"),
        (["denoise", "{inp}", "-o", "{tmp}/o.mrc", "--model", "{inp}"], "cannot read model"),
        (["denoise", "{inp}", "-o", "{tmp}/o.mrc", "--device", "tpu"], "not available"),
        (["learn-noise", "{tmp}/flat.mrc"], "constant"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line_reason(tmp_path, mrc_path, capsys, args, message):
    with mrcfile.new(tmp_path / "flat.mrc") as mrc:
        mrc.set_data(np.ones((20, 20, 20), np.float32))
    argv = [a.format(inp=mrc_path, tmp=tmp_path) for a in args]
    before = _digest(mrc_path)
    assert main([*argv, *FAST[-1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nmsg: error:") and message in err and "\n" not in err
    assert _digest(mrc_path) == before
    assert not (tmp_path / "o.mrc").exists()


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_disk_full_is_reported_and_leaves_no_partial_output(tmp_path, mrc_path):
    """A real write failure (file-size limit: EFBIG, like a full disk) mid-output."""
    out = tmp_path / "out.mrc"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_nmsg.cli", "denoise", str(mrc_path), "-o", str(out), *FAST],
        capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "cannot write" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tomo.mrc"]


def test_simulate_learn_noise_and_demo_commands(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "sim"), "--size", "24"]) == 0
    names = sorted(p.name for p in (tmp_path / "sim").iterdir())
    assert names == ["even.mrc", "noisy.mrc", "odd.mrc", "target.mrc"]
    samples = tmp_path / "samples.mrc"
    assert main(["learn-noise", str(tmp_path / "sim" / "noisy.mrc"), "--samples", str(samples),
                 "--noise-model", "spectral", "-q"]) == 0  # fmt: skip
    assert '"spectral"' in capsys.readouterr().out and samples.exists()
    assert main(["demo", "--outdir", str(tmp_path / "demo"), "--size", "32", *FAST]) == 0
    out = capsys.readouterr().out
    assert "PSNR vs noiseless target" in out and "oracle Gaussian" in out
    assert (tmp_path / "demo" / "denoised.mrc").exists()


def test_simulate_wants_a_folder_not_a_file_name(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "out.mrc"), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "out.mrc: simulate writes noisy, target, even and odd .mrc into a folder" in err
    assert err.count("\n") == 1 and not list(tmp_path.iterdir())
    existing = tmp_path / "notes.txt"
    existing.write_text("keep")
    assert main(["simulate", str(existing), "--size", "16"]) == 2
    assert "give a folder name, not a file" in capsys.readouterr().err
    assert existing.read_text() == "keep"


def test_every_command_has_help(capsys):
    for command in ["simulate", "learn-noise", "denoise", "demo"]:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "usage: nmsg" in capsys.readouterr().out


def test_amp_flag_reaches_the_config_and_defaults_to_the_preset():
    from napari_nmsg.cli import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["denoise", "a.mrc", "-o", "b.mrc", "--amp"])).amp
    args = ["denoise", "a.mrc", "-o", "b.mrc"]
    assert config_from_args(parser.parse_args(args)).amp is None  # auto
    assert config_from_args(parser.parse_args([*args, "--no-amp"])).amp is False


def test_inference_pairs_option_overrides_the_preset():
    from napari_nmsg.cli import build_parser, config_from_args

    parser = build_parser()
    base = ["denoise", "a.mrc", "-o", "b.mrc", "--preset", "quality"]
    preset = NMSGConfig.preset("quality").inference_pairs
    assert config_from_args(parser.parse_args(base)).inference_pairs == preset
    assert (
        config_from_args(parser.parse_args([*base, "--inference-pairs", "0"])).inference_pairs == 0
    )


def test_every_preset_averages_pairs_except_for_the_paper_pairing():
    assert NMSGConfig.preset("fast", noise_model="gan").inference_pairs == 4
    assert NMSGConfig.preset("balanced", noise_model="gan").inference_pairs == 4
    assert NMSGConfig.preset("fast", noise_model="gan", inference_pairs=0).inference_pairs == 0
    assert NMSGConfig.preset("quality", pairing="paper").inference_pairs == 0
    with pytest.raises(ValueError, match="applied as f"):
        NMSGConfig.preset("fast", pairing="paper", inference_pairs=1)


def test_inference_settings_come_from_the_model_unless_given():
    from napari_nmsg.engine.config import inference_settings

    model = NMSGConfig(
        inference_pairs=2, tile=32, overlap=8, amp=False, wedge_axis=1, device="cuda", tile_batch=4
    )
    # device and tile batch belong to the machine that runs it, not to the model
    assert inference_settings(model) == model.replace(device="auto", tile_batch=None)
    given = {"inference_pairs": 0, "amp": None, "device": "cpu", "train_steps": 9}
    told = inference_settings(model, given)  # None is a value here (amp: auto)
    assert (told.inference_pairs, told.amp, told.device) == (0, None, "cpu")
    assert (told.tile, told.overlap, told.wedge_axis, told.train_steps) == (32, 8, 1, 2400)
    with pytest.raises(ValueError, match="unknown"):
        inference_settings(model, {"tiles": 16})
    gan = NMSGConfig(noise_model="gan")  # made without preset(): one pass f(y)
    assert inference_settings(gan).inference_pairs == 1
    assert inference_settings(gan.replace(inference_pairs=3)).inference_pairs == 3
    assert inference_settings(gan, {"inference_pairs": 0}).inference_pairs == 0
    assert inference_settings(gan.replace(pairing="paper")).inference_pairs == 0  # f(y) only
    assert inference_settings(NMSGConfig()).inference_pairs == 0
    n2n = NMSGConfig(pairing="noisier2noise", inference_pairs=1)
    with pytest.raises(ValueError, match="inference_pairs >= 1"):
        inference_settings(n2n, {"inference_pairs": 0})


def test_noisier2noise_keeps_the_preset_pairs_and_refuses_none():
    from napari_nmsg.cli import build_parser, config_from_args

    parser = build_parser()
    base = ["denoise", "a.mrc", "-o", "b.mrc", "--pairing", "noisier2noise"]

    def pairs(*extra: str) -> int:
        return config_from_args(parser.parse_args([*base, *extra])).inference_pairs

    assert pairs() == NMSGConfig.preset("fast").inference_pairs == 4
    assert pairs("--preset", "balanced") == 4
    assert pairs("--inference-pairs", "3") == 3
    with pytest.raises(ValueError, match="inference_pairs >= 1"):
        pairs("--inference-pairs", "0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "-3"], "nmsg: error: --steps=-3 must be at least 1"),
        (["--tile", "8"], "nmsg: error: --tile=8 must be at least 16"),
        (["--crop", "17"], "nmsg: error: --crop=17 must be a multiple of 4"),
        (["--pairing", "paper", "--inference-pairs", "2"], "set --inference-pairs to 0"),
        (["--steps", "many"], "nmsg denoise: error: argument --steps: invalid int value"),
        (["--noise-model", "vae"], "nmsg denoise: error: argument --noise-model: invalid choice"),
    ],
)
def test_setting_errors_are_one_line_and_name_the_flag(tmp_path, mrc_path, capsys, args, message):
    try:
        code = main(["denoise", str(mrc_path), "-o", str(tmp_path / "o.mrc"), *args])
    except SystemExit as stop:  # argparse's own checks exit from parse_args
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "usage:" not in err
    assert "train_steps" not in err and "[" not in err  # no field names, no Python lists
    assert not (tmp_path / "o.mrc").exists()


def test_demo_refuses_a_bad_size_before_simulating_or_creating_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--outdir", str(tmp_path / "demo"), "--size", "8"])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert "argument --size: must be at least 16, not 8" in captured.err
    assert "simulating" not in captured.out and not (tmp_path / "demo").exists()
