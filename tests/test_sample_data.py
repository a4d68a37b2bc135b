"""The sample data and the npe2 manifest that exposes all contributions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_nmsg._sample_data import SAMPLE_SHAPE, make_sample_data
from napari_nmsg.simulate import simulate_tomogram

ROOT = Path(__file__).resolve().parents[1]


def test_sample_is_simulated_off_the_calling_thread(monkeypatch):
    """napari calls sample makers on its main thread, where torch must not run (see there)."""
    import threading

    from napari_nmsg import simulate

    ran_on = []

    def recording(*args, **kwargs):
        ran_on.append(threading.get_ident())
        return simulate_tomogram(*args, **kwargs)

    monkeypatch.setattr(simulate, "simulate_tomogram", recording)
    (noisy, _, _), _ = make_sample_data((16, 16, 16))
    assert noisy.shape == (16, 16, 16)
    assert len(ran_on) == 1 and ran_on[0] != threading.get_ident()


def test_sample_is_a_simulated_tomogram_and_its_target():
    start = time.perf_counter()
    (noisy, noisy_meta, kind1), (truth, truth_meta, kind2) = make_sample_data()
    assert time.perf_counter() - start < 10  # seconds, no download
    assert kind1 == kind2 == "image"
    assert noisy.shape == truth.shape == SAMPLE_SHAPE == (64, 64, 64)
    assert noisy.dtype == truth.dtype == np.float32
    sim = simulate_tomogram(SAMPLE_SHAPE, seed=0)
    np.testing.assert_array_equal(noisy, sim.noisy)
    np.testing.assert_array_equal(truth, sim.target)
    assert noisy_meta["scale"] == truth_meta["scale"] == (sim.voxel_size,) * 3
    assert truth_meta["visible"] is False and truth_meta["metadata"]["ground_truth"]
    lo, hi = noisy_meta["contrast_limits"]
    assert noisy.min() < lo < hi < noisy.max()
    # the noise is real: the noisy volume is far from its target
    assert np.std(noisy - truth) > 0.5 * np.std(truth)


def test_open_sample_adds_both_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-nmsg", "simulated_tomogram")
    assert [layer.name for layer in viewer.layers] == [
        "simulated tomogram",
        "simulated tomogram (ground truth)",
    ]
    assert viewer.layers[0].visible and not viewer.layers[1].visible
    np.testing.assert_array_equal(viewer.layers[0].scale, (10.0, 10.0, 10.0))


def test_root_manifest_is_the_packaged_one():
    root, packaged = ROOT / "napari.yaml", ROOT / "src" / "napari_nmsg" / "napari.yaml"
    assert root.is_symlink() and not os.path.isabs(os.readlink(root))
    assert root.resolve() == packaged.resolve()


def test_npe2_validate_passes():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    if npe2 is None:
        pytest.skip("npe2 command not installed")
    for target in ("napari-nmsg", str(ROOT / "napari.yaml")):
        result = subprocess.run(
            [npe2, "validate", "--imports", target], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "valid" in result.stdout
