"""The NMSG loss: reconstruction + sparsity (in-plane gradient) + guidance terms.

``λ_rec·MSE(f, t) + λ_grad·MSE(∇f, ∇S) + λ_gui·MSE(f, G)``, with ``∇ = |Sobel_y| + |Sobel_x|``
in the plane normal to the thickness axis, ``S`` an over-smoothed copy of the input (sparse
gradients) and ``G`` a gently Gaussian-filtered copy (guidance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import NMSGConfig
from .unet import gaussian_blur, gaussian_kernel


def _sobel_kernels(device: torch.device) -> torch.Tensor:
    smooth = torch.tensor([1.0, 2.0, 1.0], device=device)
    diff = torch.tensor([-1.0, 0.0, 1.0], device=device)
    ky = smooth[:, None, None] * diff[None, :, None] * smooth[None, None, :]
    kx = smooth[:, None, None] * smooth[None, :, None] * diff[None, None, :]
    return torch.stack([ky, kx])[:, None] / 16.0


def inplane_gradient(x: torch.Tensor) -> torch.Tensor:
    """``|Sobel_y| + |Sobel_x|`` of ``(B, 1, Z, Y, X)``, same size (replicate padding)."""
    padded = F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
    grads = F.conv3d(padded, _sobel_kernels(x.device))
    return grads.abs().sum(dim=1, keepdim=True)


def nmsg_loss(
    output: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor, config: NMSGConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts; ``noisy`` is the un-recorrupted crop the guides come from."""
    rec = F.mse_loss(output, target)
    total = config.lambda_rec * rec
    parts = {"rec": rec.item()}
    if config.lambda_grad > 0:
        sparse = gaussian_blur(noisy, gaussian_kernel(config.sparsity_sigma))
        grad = F.mse_loss(inplane_gradient(output), inplane_gradient(sparse))
        total = total + config.lambda_grad * grad
        parts["grad"] = grad.item()
    if config.lambda_gui > 0:
        gui = F.mse_loss(output, gaussian_blur(noisy, gaussian_kernel(config.guidance_sigma)))
        total = total + config.lambda_gui * gui
        parts["gui"] = gui.item()
    parts["loss"] = total.item()
    return total, parts
