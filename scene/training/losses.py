"""The image loss every method trains with (docs/DESIGN.md section 4.1). A method's own losses and
regularisers are its components' (:meth:`scene.model.components.Component.losses`): GaussianAvatars'
position and scale regularisers are the ``flame_bound`` geometry's, the truncated opacity penalty is
the feature-line opacity's."""
from __future__ import annotations

import torch

from utils.image_metrics import ssim

__all__ = ["photometric_loss"]


def photometric_loss(image: torch.Tensor, gt: torch.Tensor, lambda_dssim: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1 - lambda) L1 + lambda D-SSIM of a render (H, W, 3) against its ground truth (H, W, 3);
    SSIM over a zero-padded ("same") image, as 3DGS and GaussianAvatars train with.
    Returns (loss, l1, d_ssim), scalars."""
    l1 = (image - gt).abs().mean()
    d_ssim = 1.0 - ssim(image.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], padding="same").mean()
    return (1 - lambda_dssim) * l1 + lambda_dssim * d_ssim, l1, d_ssim
