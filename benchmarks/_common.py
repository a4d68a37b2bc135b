"""Helpers shared by the benchmark scripts: machine facts, memory, FSC, reports, workers.

Nothing here is part of the package; the benchmarks import the engine like any user would.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------ machine and provenance


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def git_revision() -> str:
    try:
        rev = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, library versions and load: say which machine gave the numbers."""
    import torch

    import napari_nmsg
    from napari_nmsg.engine.device import native_bfloat16_cpu

    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bfloat16_cpu(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "napari_nmsg": napari_nmsg.__version__,
        "git": git_revision(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "cuda": torch.cuda.is_available(),
    }


# What makes timings comparable: one CPU model string covers AVX2-only and AVX-512 parts
# (measured: "AMD EPYC" on both, the fast preset 2.0-3.1x slower on the AVX2 one)
MACHINE_KEYS = ("cpu_model", "cpu_cores", "cpu_capability", "native_bf16")


def machine_for(report: dict[str, Any], fail: Callable[[str], NoReturn]) -> dict[str, Any]:
    """This machine's facts, for a ``report`` that new rows join: ``fail`` (e.g. an argument
    parser's ``error``) is called when the saved report was made on another machine, since
    one report's timings and ratios are read side by side."""
    current, saved = machine_info(), report.get("machine")
    differ = [k for k in MACHINE_KEYS if saved is not None and saved.get(k) != current.get(k)]
    if differ:
        was = ", ".join(f"{k} {saved.get(k)!r}" for k in differ)
        now = ", ".join(f"{k} {current.get(k)!r}" for k in differ)
        fail(
            f"the saved report was made on another machine ({was}; this one: {now}): "
            "write this machine's rows to another --out"
        )
    return current


def seed_for(report: dict[str, Any], seed: int, fail: Callable[[str], NoReturn]) -> int:
    """``seed``, for a ``report`` that new rows join: ``fail`` is called when the saved
    report was made with another seed, since one training seed against another moves a
    preset by tenths of a dB (README) and rows side by side must differ only in method."""
    saved = report.get("seed", seed)  # reports from before the seed was recorded: 0
    if saved != seed:
        fail(
            f"the saved report was made with --seed {saved}: write seed {seed}'s rows to "
            "another --out"
        )
    return seed


def machine_markdown(info: dict[str, Any], end_load: Sequence[float] | None = None) -> str:
    load = f"load average at start {info['load_avg']}"
    if end_load is not None:
        load += f", at end {[round(v, 2) for v in end_load]}"
    isa = ""
    if "cpu_capability" in info:
        bf16 = "native bfloat16" if info["native_bf16"] else "no native bfloat16"
        isa = f" ({info['cpu_capability']}, {bf16})"
    return (
        f"Machine: {info['cpu_model']}{isa}, {info['cpu_cores']} cores, "
        f"{info['memory_gb']} GB RAM; "
        f"torch {info['torch']} ({info['torch_threads']} threads), numpy {info['numpy']}, "
        f"Python {info['python']}; napari-nmsg {info['napari_nmsg']} at {info['git']}; "
        f"{load} (the 2 cores may be shared with other work: absolute timings move with "
        "the load, ratios measured in one run are steadier)."
    )


# ------------------------------------------------------------------ true noise


def true_noise_field(data: dict[str, Any], normalisation: Any) -> tuple[np.ndarray, np.ndarray]:
    """The simulator's true noise (noisy − target), normalised and wedge-axis-first like a
    learned model's, and where it holds data: inside any fill frame (``data["scored"]``)."""
    from napari_nmsg.engine.volume import canonical_view

    noise = (data["noisy"] - data["target"]) / normalisation.scale
    inside = np.zeros(noise.shape, bool)
    inside[data.get("scored", (slice(None),) * 3)] = True
    axis = normalisation.wedge_axis
    return canonical_view(noise, axis), canonical_view(inside, axis)  # views, not copies


def true_noise_patches(
    data: dict[str, Any], normalisation: Any, size: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` mean-free ``size``³ patches of ``true_noise_field`` at random places inside
    the data."""
    noise, inside = true_noise_field(data, normalisation)
    corners = []
    while len(corners) < count:
        corner = [int(rng.integers(0, n - size + 1)) for n in noise.shape]
        if inside[tuple(slice(c, c + size) for c in corner)].all():
            corners.append(corner)
    return mean_free_boxes(noise, corners, size)


def mean_free_boxes(field: np.ndarray, corners: Any, size: int) -> np.ndarray:
    """The ``size``³ boxes of ``field`` at ``corners``, each less its mean, as float32."""
    stacked = np.stack([field[tuple(slice(c, c + size) for c in corner)] for corner in corners])
    stacked = stacked.astype(np.float32)
    return stacked - stacked.mean(axis=(1, 2, 3), keepdims=True)


# ------------------------------------------------------------------ memory


def peak_rss_mb() -> float:
    """This process's peak resident set size (a high-water mark: it never goes down).

    On Linux this is ``VmHWM`` from ``/proc/self/status``, the high-water mark of the
    process's own address space. ``getrusage().ru_maxrss`` is not used there: Linux carries
    the parent's high-water mark over fork + exec, so a fresh worker would report at least
    the peak of the process that started it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def rss_now_mb() -> dict[str, float]:
    """Current RSS split into anonymous (heap) and file-backed (memory maps) parts."""
    out = {"rss": 0.0, "anon": 0.0, "file": 0.0}
    keys = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name = line.split(":", 1)[0]
            if name in keys:
                out[keys[name]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class RssSampler:
    """Samples ``/proc/self/status`` in a thread; ``peaks`` are the largest values seen.

    ``ru_maxrss`` counts resident pages of memory-mapped files too (page cache the kernel
    can drop at will); the anonymous part is what a process really has to keep.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peaks = {"rss": 0.0, "anon": 0.0, "file": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for key, value in rss_now_mb().items():
            self.peaks[key] = max(self.peaks[key], value)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# ------------------------------------------------------------------ Fourier shell correlation


def fsc_curve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fourier shell correlation of two volumes of equal shape.

    Shells are one Fourier voxel wide (``1 / min(shape)`` cycles per voxel) in the 3D
    frequency grid of each axis (non-cubic volumes use physical frequencies), from zero
    to Nyquist. Returns ``(frequency in cycles/voxel, FSC)`` per shell.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    fa = np.fft.rfftn(a.astype(np.float64) - a.mean())
    fb = np.fft.rfftn(b.astype(np.float64) - b.mean())
    grids = [np.fft.fftfreq(n) for n in a.shape[:-1]] + [np.fft.rfftfreq(a.shape[-1])]
    radius = np.sqrt(sum(g**2 for g in np.meshgrid(*grids, indexing="ij", sparse=True)))
    n = min(a.shape)
    shell = np.rint(radius * n).astype(np.int64)
    # the rfft stores half the spectrum: count the planes that stand for two (conjugates) twice
    weight = np.full(fa.shape, 2.0)
    weight[..., 0] = 1.0
    if a.shape[-1] % 2 == 0:
        weight[..., -1] = 1.0
    nshell = n // 2 + 1
    keep = shell < nshell
    idx = shell[keep]
    cross = np.bincount(idx, (weight * np.real(fa * np.conj(fb)))[keep], nshell)
    pa = np.bincount(idx, (weight * np.abs(fa) ** 2)[keep], nshell)
    pb = np.bincount(idx, (weight * np.abs(fb) ** 2)[keep], nshell)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = cross / np.sqrt(pa * pb)
    curve[0] = 1.0  # the mean was removed: the zero-frequency shell is empty
    return np.arange(nshell) / n, np.nan_to_num(curve)


def fsc_resolution(
    freq: np.ndarray, curve: np.ndarray, threshold: float, voxel_size: float
) -> tuple[float, bool]:
    """(resolution in Å where the FSC first drops below ``threshold``, whether it never did).

    Linear interpolation between the two shells around the crossing; if the curve stays
    above the threshold up to Nyquist the Nyquist resolution (2 voxels) is returned.
    """
    for k in range(1, len(curve)):
        if curve[k] < threshold:
            f0, f1, c0, c1 = freq[k - 1], freq[k], curve[k - 1], curve[k]
            f = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0) if c0 != c1 else f1
            return float(voxel_size / max(f, 1e-6)), False
    return float(voxel_size / freq[-1]), True


# ------------------------------------------------------------------ reports


def precision_name(config: Any) -> str:
    """The dtype inference runs in for ``config`` (``float32`` when autocast is off)."""
    from napari_nmsg.engine import resolve_device
    from napari_nmsg.engine.device import inference_dtype

    dtype = inference_dtype(resolve_device(config.device), config.amp)
    return str(dtype).removeprefix("torch.") if dtype else "float32"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    tmp.replace(path)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How ``script`` (its ``__file__``) was run, quoted so that it can be pasted again."""
    import shlex

    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{Path(script).name}", *map(shlex.quote, args)])


def save_figure(fig: Any, path: Path, dpi: int = 120, **layout: Any) -> None:
    """Lay out, write and close ``fig`` (pyplot keeps every open figure alive otherwise)."""
    import matplotlib.pyplot as plt

    fig.tight_layout(**layout)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_report(
    out: Path,
    name: str,
    report: dict[str, Any],
    render: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None],
) -> None:
    """``name``.json, its Markdown ``render`` and its figure ``plot`` in ``out``."""
    write_json(out / f"{name}.json", report)
    (out / f"{name}.md").write_text(render(report) + "\n")
    plot(report, out / f"{name}.png")
    log(f"wrote {out / f'{name}.md'}")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def log(message: str, start: float | None = None) -> None:
    stamp = time.strftime("%H:%M:%S")
    extra = f" [+{time.perf_counter() - start:.0f}s]" if start is not None else ""
    print(f"{stamp}{extra} {message}", flush=True)


# ------------------------------------------------------------------ worker subprocesses


def run_worker(
    script: Path, spec_path: Path, on_line: Callable[[str], None], timeout: float | None = None
) -> tuple[int, list[str]]:
    """Run ``python script --_worker spec_path`` in a fresh process, streaming its output.

    Returns (exit status, the last 40 output lines). A fresh process per measurement makes
    its peak RSS that measurement's own, not a high-water mark left by an earlier one.
    """
    cmd = [sys.executable, str(script), "--_worker", str(spec_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    tail: list[str] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    timer = None
    if deadline is not None:
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-39:], line]
            on_line(line)
        rc = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if deadline is not None and rc < 0 and time.monotonic() >= deadline:
        tail.append(f"killed after the {timeout:.0f} s timeout")
    return rc, tail
