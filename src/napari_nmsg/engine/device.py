"""Choose where torch runs: CUDA, then Apple MPS, then CPU, unless the user says otherwise."""

from __future__ import annotations

import os

import torch

from ..errors import InputError

# oneDNN instruction sets below AVX512_CORE_BF16: capped to one of them (ONEDNN_MAX_CPU_ISA,
# or its older name DNNL_MAX_CPU_ISA), oneDNN emulates bfloat16 even where the CPU has it
# (measured on an AMX Xeon, a 64³ tile of the fast U-Net: float32 0.20 s, bfloat16 0.12 s,
# capped to AVX2 8.4 s, capped to AVX512_CORE 0.29 s)
_ISAS_WITHOUT_BF16 = {
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
}  # fmt: skip


def available_devices() -> list[str]:
    """Device names usable on this machine, best first, always ending with ``cpu``."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the best available device; an unavailable one is a clear error."""
    available = available_devices()
    if name == "auto":
        return torch.device(available[0])
    kind = name.split(":")[0]
    if kind not in available:
        raise InputError(
            f"device {name!r} is not available here; choose one of {['auto', *available]}"
        )
    return torch.device(name)


def native_bfloat16_cpu() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX or AVX512-BF16).

    Elsewhere bfloat16 autocast is emulated and can be far slower than float32, as it is
    when oneDNN is capped below those instruction sets (clusters do, for reproducibility).
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    if cap.strip().upper() in _ISAS_WITHOUT_BF16:
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu, torch ≥ 2.3
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def inference_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype for inference, or None for float32.

    ``amp=None`` (auto) turns mixed precision on where it is measured faster with the same
    PSNR: float16 on CUDA, bfloat16 on CPUs with native support; only the predicted
    correction is rounded, as the network adds it to its float32 input.
    """
    dtypes = {"cuda": torch.float16, "cpu": torch.bfloat16}
    if amp is None:
        amp = device.type == "cuda" or (device.type == "cpu" and native_bfloat16_cpu())
    return dtypes.get(device.type) if amp else None


def conv_memory_format(device: torch.device, training: bool = False) -> torch.memory_format:
    """The layout the 3D U-Net's weights (and so its activations) should use on ``device``.

    On CPU, oneDNN's 3D convolutions ran 1.6× faster channels-last (NDHWC) than
    contiguous, for training steps and for float32 and bfloat16 inference alike (2-core
    Xeon, width-16 U-Net). On CUDA, float16 inference ran 1.2-3.0× faster channels-last
    (H200, cuDNN 9.19, batches of 64³-128³ tiles: the fast U-Net 274 -> 800 Mvox/s on eight
    64³ tiles, quality 388 -> 536; benchmarks/results/gpu); CUDA training was only timed
    in the default layout, so it keeps that.
    """
    if device.type == "cpu" or (device.type == "cuda" and not training):
        return torch.channels_last_3d
    return torch.contiguous_format


def tile_batch_for(device: torch.device, tile_batch: int | None) -> int:
    """Tiles per network call: ``tile_batch``, or where it is None (auto) 8 on CUDA and 2
    elsewhere. On CUDA the presets' U-Nets run eight 64³ tiles 1.9-2.8× faster per voxel
    than two (H200, float16 channels-last: fast 287 -> 800 Mvox/s, quality 281 -> 536); on
    a 2-core CPU eight 48³ tiles instead of one gained only 25 %, for eight times the memory.
    """
    if tile_batch is not None:
        return tile_batch
    return 8 if device.type == "cuda" else 2
