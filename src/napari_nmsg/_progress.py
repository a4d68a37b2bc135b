"""Text for the widget: progress bar (stage, count, ETA), latest losses, noise fidelity."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

STAGE_LABELS = {
    "noise-patches": "Finding noise patches",
    "noise-model": "Training the noise model",
    "train": "Training the denoiser",
    "validate": "Checking the result against the best Gaussian",
    "denoise": "Denoising",
}


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_metrics(metrics: Mapping[str, float], limit: int = 4) -> str:
    """The latest losses/figures as ``"loss 0.0123 · rec 0.0120"`` (``loss`` first)."""
    names = sorted(metrics, key=lambda k: (k != "loss", k))[:limit]
    return " · ".join(f"{name} {metrics[name]:.4g}" for name in names)


def format_fidelity(fidelity: Mapping[str, Mapping[str, float]]) -> str:
    """One line per noise model kind with its figures against held-out real noise."""
    lines = [
        f"{kind}: spectrum error {f['log_psd_error']:.3f}, histogram {f['hist_error']:.3f}, "
        f"variance ×{f['variance_ratio']:.2f}, "
        f"kurtosis {f['kurtosis']:.2f} (real {f['kurtosis_real']:.2f})"
        for kind, f in fidelity.items()
    ]
    return "Noise fidelity vs held-out real patches (0 = perfect):\n" + "\n".join(lines)


class StageClock:
    """Estimates the time left in the current stage from the rate of its steps so far."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._stage: str | None = None
        self._t0 = 0.0
        self._step0 = 0

    def update(self, stage: str, step: int, total: int) -> tuple[float, float | None]:
        """(fraction done in ``[0, 1]``, seconds left or ``None`` while unknown)."""
        now = self._clock()
        if stage != self._stage or step < self._step0:
            self._stage, self._t0, self._step0 = stage, now, step
        fraction = min(1.0, step / total) if total > 0 else 0.0
        done = step - self._step0
        if done <= 0 or total <= 0:
            return fraction, None
        return fraction, (now - self._t0) / done * max(0, total - step)

    def text(self, stage: str, step: int, total: int) -> tuple[float, str]:
        """(fraction, ``"Training the denoiser 12/300 · ETA 0:42"``)."""
        fraction, left = self.update(stage, step, total)
        label = STAGE_LABELS.get(stage, stage)
        eta = f" · ETA {format_duration(left)}" if left is not None and step < total else ""
        return fraction, f"{label} {step}/{total}{eta}"
