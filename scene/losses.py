"""The training losses other than the opacity penalty (:mod:`scene.opacity_penalty`):
the photometric loss and GaussianAvatars' regularisers (docs/DESIGN.md section 4.1)."""
from __future__ import annotations

import torch

from utils.image_metrics import ssim

__all__ = ["photometric_loss", "splat_regularisers"]


def photometric_loss(image: torch.Tensor, gt: torch.Tensor, lambda_dssim: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1 - lambda) L1 + lambda D-SSIM of a render (H, W, 3) against its ground truth (H, W, 3);
    SSIM over a zero-padded ("same") image, as 3DGS and GaussianAvatars train with.
    Returns (loss, l1, d_ssim), scalars."""
    l1 = (image - gt).abs().mean()
    d_ssim = 1.0 - ssim(image.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], padding="same").mean()
    return (1 - lambda_dssim) * l1 + lambda_dssim * d_ssim, l1, d_ssim


def splat_regularisers(params: dict, radii: torch.Tensor, threshold_position: float, threshold_scale: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """GaussianAvatars' position and scale regularisers, in triangle-local units, averaged over
    the splats this camera sees (GA's visibility filter, ``radii > 0``).

    Args:
        params: the splats' parameters: xyz (N, 3) local positions, log_scale (N, 3).
        radii: (N,) screen radii from the rasterizer.
    Returns:
        (position, scale): mean of relu(|xyz| - threshold_position) and of
        |relu(exp(log_scale) - threshold_scale)| over the visible splats.
    """
    visible = (radii > 0).to(params["xyz"].dtype)
    n_visible = visible.sum().clamp_min(1.0)
    position = (torch.relu(params["xyz"].norm(dim=1) - threshold_position) * visible).sum() / n_visible
    scale = (torch.relu(torch.exp(params["log_scale"]) - threshold_scale).norm(dim=1) * visible).sum() / n_visible
    return position, scale
