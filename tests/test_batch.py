"""``nmsg batch`` / ``denoise_many`` on real Dask clusters (LocalCluster with processes, and a
scheduler + worker started here as subprocesses), with tiny volumes and a few steps."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_nmsg import cli
from napari_nmsg.batch import (
    SHARED_MODEL_NAME,
    WORKER_MEMORY,
    expand_inputs,
    local_cluster_size,
    remove_stale_temp_files,
    run_job,
    sidecar_path,
)
from napari_nmsg.engine import NMSGConfig, iter_fit_denoiser, run_events, save_model
from napari_nmsg.errors import InputError
from napari_nmsg.io import write_mrc
from napari_nmsg.simulate import simulate_tomogram

VOXEL = (9.0, 7.5, 7.5)  # (z, y, x) Å, anisotropic so a swapped axis would show
SHAPE = (24, 32, 32)
FAST = ["--steps", "3", "--noise-model", "spectral", "--crop", "16", "--width", "8",
        "--tile", "16", "--overlap", "4"]  # fmt: skip
BATCH_TIMEOUT = 300


@pytest.fixture(scope="module")
def volumes() -> list[np.ndarray]:
    return [simulate_tomogram(SHAPE, snr=0.1, seed=seed).noisy for seed in range(4)]


def write_inputs(folder: Path, volumes, n: int, corrupt: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_mrc(folder / f"t{i}.mrc", volumes[i], VOXEL) for i in range(n)]
    if corrupt:  # a truncated copy of a good file: header fine, data missing
        bad = folder / "bad.mrc"
        bad.write_bytes(paths[0].read_bytes()[:3000])
        paths.append(bad)
    return paths


def summary(outdir: Path) -> dict[str, dict]:
    """summary.json items by input file name."""
    payload = json.loads((outdir / "summary.json").read_text())
    return {Path(item["input"]).name: item for item in payload["items"]}


def mtimes(outdir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in outdir.glob("*.mrc")}


def check_output(path: Path, source: np.ndarray) -> None:
    with mrcfile.open(path, permissive=False) as mrc:
        assert mrc.data.shape == source.shape
        assert np.isfinite(mrc.data).all()
        voxel = mrc.voxel_size
        assert (float(voxel.z), float(voxel.y), float(voxel.x)) == pytest.approx(VOXEL)


def batch(*args: str) -> int:
    return cli.main(["batch", *map(str, args), *FAST, "-q"])


def test_failure_is_isolated_and_reruns_resume(tmp_path, volumes, capsys):
    inputs = write_inputs(tmp_path / "in", volumes, 2, corrupt=True)
    out = tmp_path / "out"
    names = ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED")
    environment = {name: os.environ.get(name) for name in names}

    assert batch(str(tmp_path / "in" / "*.mrc"), "-o", out) == 3
    # Dask's nanny set these here to spawn its workers; later subprocesses must not inherit them
    assert {name: os.environ.get(name) for name in names} == environment
    assert "bad.mrc" in capsys.readouterr().err
    for i in range(2):
        check_output(out / f"t{i}.mrc", volumes[i])
        assert sidecar_path(out / f"t{i}.mrc").is_file()
    assert not (out / "bad.mrc").exists()
    items = summary(out)
    assert [items[n]["status"] for n in ("t0.mrc", "t1.mrc", "bad.mrc")] == [
        "done", "done", "failed"
    ]  # fmt: skip
    assert "truncated" in items["bad.mrc"]["error"]
    assert items["t0.mrc"]["peak_rss_mb"] > 0 and items["t0.mrc"]["seconds"]["fit"] > 0
    with open(out / "summary.csv", newline="") as handle:
        rows = {Path(r["input"]).name: r for r in csv.DictReader(handle)}
    assert rows["bad.mrc"]["status"] == "failed" and rows["bad.mrc"]["error"]
    assert rows["t1.mrc"]["status"] == "done" and float(rows["t1.mrc"]["seconds_total"]) > 0

    # Same settings: finished outputs are skipped without a task, files untouched.
    before = mtimes(out)
    assert batch(*inputs, "-o", out) == 3  # the corrupt one is retried and fails again
    items = summary(out)
    assert items["t0.mrc"]["status"] == items["t1.mrc"]["status"] == "skipped"
    assert items["t0.mrc"]["seconds"] == {}  # decided by the quick check, no task ran
    assert items["bad.mrc"]["status"] == "failed"
    assert mtimes(out) == before

    # t0 touched (same bytes): re-hashed on a worker and skipped; t1 changed: redone.
    os.utime(inputs[0], ns=(time.time_ns(), time.time_ns()))
    write_mrc(inputs[1], volumes[2], VOXEL)
    assert batch(*inputs[:2], "-o", out) == 0
    items = summary(out)
    assert items["t0.mrc"]["status"] == "skipped" and "hash" in items["t0.mrc"]["seconds"]
    assert items["t1.mrc"]["status"] == "done"
    after = mtimes(out)
    assert after["t0.mrc"] == before["t0.mrc"] and after["t1.mrc"] != before["t1.mrc"]
    check_output(out / "t1.mrc", volumes[2])
    # ... and the refreshed sidecar lets the next run skip t0 by the quick check again.
    assert batch(*inputs[:2], "-o", out) == 0
    assert summary(out)["t0.mrc"]["seconds"] == {}

    # Another setting redoes everything.
    assert cli.main(["batch", *map(str, inputs[:2]), "-o", str(out), *FAST, "--steps", "4"]) == 0
    assert {item["status"] for item in summary(out).values()} == {"done"}
    assert all(mtimes(out)[n] != before[n] for n in before)


def test_killed_run_resumes_without_partial_files(tmp_path, volumes):
    inputs = write_inputs(tmp_path / "in", volumes, 3)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".t2.mrc.k1ll3d00.part"  # what a kill during a write leaves behind
    stale.write_bytes(b"partial")
    foreign = out / ".notes.txt.abc.part"  # not ours: must be left alone
    foreign.write_bytes(b"x")
    command = [sys.executable, "-m", "napari_nmsg.cli", "batch", *map(str, inputs), "-o",
               str(out), *FAST, "--steps", "8", "-q"]  # fmt: skip
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + BATCH_TIMEOUT
        while not list(out.glob("*.nmsg.json")):
            assert proc.poll() is None, "the batch finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its LocalCluster workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.name.removesuffix(".nmsg.json") for p in out.glob("*.nmsg.json")}
    assert 1 <= len(finished) < 3

    assert cli.main(["batch", *map(str, inputs), "-o", str(out), *FAST, "--steps", "8", "-q"]) == 0
    items = summary(out)
    assert all(items[name]["status"] == "skipped" for name in finished)
    assert {items[name]["status"] for name in set(items) - finished} == {"done"}
    for i in range(3):
        check_output(out / f"t{i}.mrc", volumes[i])
    names = {p.name for p in out.iterdir()}
    expected = {f"t{i}.mrc{s}" for i in range(3) for s in ("", ".nmsg.json")}
    expected |= {"summary.json", "summary.csv", ".nmsg-batch.lock", foreign.name}
    assert names == expected  # no stale or duplicate files


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and one worker started as separate processes; yields the address."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    dask = shutil.which("dask", path=search)
    if dask is None:
        pytest.skip("the `dask` command is not installed")
    scheduler_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", scheduler_file],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file():
            assert time.monotonic() < deadline and procs[0].poll() is None
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [dask, "worker", "--scheduler-file", scheduler_file, "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
            address = client.scheduler.address
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_existing_scheduler(tmp_path, volumes, dask_cluster):
    inputs = write_inputs(tmp_path / "in", volumes, 2)
    list_file = tmp_path / "tomos.txt"
    list_file.write_text("# my tomograms\n" + "\n".join(map(str, inputs)) + "\n")
    out = tmp_path / "out"
    assert batch(f"@{list_file}", "-o", out, "--scheduler", dask_cluster) == 0
    payload = json.loads((out / "summary.json").read_text())
    assert payload["scheduler"] == dask_cluster and payload["n_workers"] == 1
    for i in range(2):
        check_output(out / f"t{i}.mrc", volumes[i])


def test_saved_model_does_no_training(tmp_path, volumes):
    config = NMSGConfig.preset(
        "fast",
        train_steps=3,
        noise_model="spectral",
        crop=16,
        unet_width=8,
        tile=16,
        overlap=4,
        gaussian_fallback=False,  # a network, not a linear filter whose pairs cancel
    )
    model_path = save_model(run_events(iter_fit_denoiser(volumes[3], config)), tmp_path / "m.pt")
    inputs = write_inputs(tmp_path / "in", volumes, 2)
    out = tmp_path / "out"
    assert batch(*inputs, "-o", out, "--model", model_path) == 0
    items = summary(out)
    for i in range(2):
        check_output(out / f"t{i}.mrc", volumes[i])
        assert items[f"t{i}.mrc"]["seconds"]["fit"] == 0.0
    sidecar = json.loads(sidecar_path(out / "t0.mrc").read_text())
    assert sidecar["settings"]["mode"] == "model"
    # every inference setting that changes the output is in the resume key
    model_own = {
        "inference_pairs": config.inference_pairs, "tile": 16, "overlap": 4, "amp": None,
        "wedge_axis": None,
    }  # fmt: skip
    assert sidecar["settings"]["inference"] == model_own
    estimate = sidecar["quality_estimate"]
    assert estimate["gaussian_sigma"] > 0 and isinstance(estimate["fell_back"], bool)
    with mrcfile.open(out / "t0.mrc") as mrc:
        two_pairs = mrc.data.copy()

    # one pass gives other outputs: they are redone, not skipped
    assert batch(*inputs, "-o", out, "--model", model_path, "--inference-pairs", "0") == 0
    assert {item["status"] for item in summary(out).values()} == {"done"}
    with mrcfile.open(out / "t0.mrc") as mrc:
        assert not np.allclose(mrc.data, two_pairs, atol=1e-4 * np.abs(two_pairs).max())
    assert batch(*inputs, "-o", out, "--model", model_path, "--inference-pairs", "0") == 0
    assert {item["status"] for item in summary(out).values()} == {"skipped"}


def test_fit_on_two_denoises_all_with_one_model(tmp_path, volumes):
    inputs = write_inputs(tmp_path / "in", volumes, 3)
    out = tmp_path / "out"
    assert batch(*inputs, "-o", out, "--fit-on", "2") == 0
    payload = json.loads((out / "summary.json").read_text())
    shared = payload["shared_model"]
    assert len(shared["used"]) == 2 and (out / SHARED_MODEL_NAME).is_file()
    for i in range(3):
        check_output(out / f"t{i}.mrc", volumes[i])
        sidecar = json.loads(sidecar_path(out / f"t{i}.mrc").read_text())
        assert sidecar["settings"]["model_blake2b"] == shared["model_blake2b"]
    # A re-run reuses the shared model and skips everything without starting a cluster.
    assert batch(*inputs, "-o", out, "--fit-on", "2") == 0
    payload = json.loads((out / "summary.json").read_text())
    assert payload["n_workers"] is None
    assert {item["status"] for item in payload["items"]} == {"skipped"}


# --- pieces, without a cluster ------------------------------------------------------------


def test_expand_inputs(tmp_path):
    for name in ("b.mrc", "a.mrc", "c.rec"):
        (tmp_path / name).touch()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'c.rec'}\n\n# comment\n{tmp_path / 'a.mrc'}\n")
    found = expand_inputs([str(tmp_path / "*.mrc"), f"@{listing}", tmp_path / "missing.mrc"])
    assert [p.name for p in found] == ["a.mrc", "b.mrc", "c.rec", "missing.mrc"]
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.tif")])


def test_output_name_clash_and_input_as_output_are_refused(tmp_path, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "t.mrc").touch()
    assert cli.main(["batch", str(tmp_path / "*/t.mrc"), "-o", str(tmp_path / "out")]) == 2
    assert "both be written" in capsys.readouterr().err
    assert cli.main(["batch", str(tmp_path / "x/t.mrc"), "-o", str(tmp_path / "x")]) == 2
    assert "replace its input" in capsys.readouterr().err


def test_stale_temp_files_only_ours_are_removed(tmp_path):
    for name in (".t.mrc.abc123.part", ".t.mrc.nmsg.json.x_y.part", ".u.mrc.abc.part", "t.mrc"):
        (tmp_path / name).touch()
    assert remove_stale_temp_files(tmp_path, ["t.mrc", "t.mrc.nmsg.json"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".u.mrc.abc.part", "t.mrc"]


def test_local_cluster_size():
    cores = len(os.sched_getaffinity(0))
    plenty = 64 * WORKER_MEMORY
    assert local_cluster_size(100, device="cpu", memory=plenty) == (cores, 1)
    assert local_cluster_size(1, device="cpu", memory=plenty) == (1, cores)
    assert local_cluster_size(5, device="cpu", n_workers=2) == (2, max(1, cores // 2))
    # RAM for one task only: one worker with every core, whatever the core count
    assert local_cluster_size(100, device="cpu", memory=WORKER_MEMORY + 1) == (1, cores)


HEAP_PROBE = """
import resource
import numpy as np
from napari_nmsg.batch.heap import tensor_friendly_heap

def page_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        np.ones(2**17).sum()  # allocates and frees 1 MiB, like a training step's tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

fixed = page_faults()
with tensor_friendly_heap():
    page_faults()
    friendly = page_faults()
print(fixed, friendly, page_faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tasks_undo_dasks_malloc_trim_threshold():
    """With Dask's MALLOC_TRIM_THRESHOLD_, every 1 MiB array is a fresh mmap that faults in
    256 pages; inside a task it comes from the heap, and the worker's setting comes back."""
    env = os.environ | {"MALLOC_TRIM_THRESHOLD_": "65536"}
    probe = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE], env=env, capture_output=True, text=True, check=True
    )
    fixed, friendly, restored = map(int, probe.stdout.split())
    assert fixed >= 50 * 200 and restored >= 50 * 200
    assert friendly < 50


def test_task_that_raises_is_a_result(tmp_path):
    """A task never raises: a constant volume comes back as a failed record."""
    src = write_mrc(tmp_path / "flat.mrc", np.ones(SHAPE, np.float32), VOXEL)
    from napari_nmsg.batch import Job

    job = Job(0, str(src), str(tmp_path / "out.mrc"), NMSGConfig().to_dict(), {}, "d")
    record = run_job(job)
    assert record["status"] == "failed" and "constant" in record["error"]
    assert not (tmp_path / "out.mrc").exists()
    assert not list(tmp_path.glob(".*.part"))
