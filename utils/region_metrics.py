"""PSNR, SSIM and LPIPS over a region of the image (a boolean pixel mask), from the same maps the
full-frame metrics reduce (evaluate.py's region metrics; the regions: scene/data/regions.py).

Per image and region, with ``m`` the region's pixels:

- PSNR: ``10 log10(1 / MSE)`` with the MSE over the region's pixels only (all channels).
- SSIM: the mean over the region's pixels (and the channels) of the SSIM map
  (:func:`utils.image_metrics.ssim_map`, whichever padding the metric set uses). With ``valid``
  padding the map has no value for the ``(window - 1) / 2`` pixel border, so the mean is over the
  region's pixels inside it (NaN, i.e. left out of the means, for a region lying wholly in the
  border). Each map value is the SSIM of the window centred on the pixel, so windows at a region's
  edge also see the pixels next to it: SSIM is a local-structure measure and has no sharper form.
- LPIPS: each layer's distance map (:meth:`utils.lpips.LPIPS.layer_maps`, at that layer's
  resolution) averaged over the region, each map cell weighted by the fraction of its share of
  the image that lies in the region (``adaptive_avg_pool2d`` of the mask to the map's size), and
  summed over layers. A region of every pixel gives weights 1: exactly the full-frame LPIPS
  (the sum over layers of each map's mean).

A region with no pixel in an image gives NaN for all three (the caller skips it for that image).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["region_psnr", "region_ssim", "region_lpips"]


def region_psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR (dB) over the masked pixels.

    Args:
        x, y: (B, C, H, W) images in [0, data_range].
        mask: (B, H, W) bool region.

    Returns:
        (B,) in x's dtype; ``inf`` where the region matches exactly, NaN where it is empty.
    """
    m = mask[:, None].to(x.dtype)
    count = m.sum(dim=(1, 2, 3)) * x.shape[1]
    mse = ((x - y).pow(2) * m).sum(dim=(1, 2, 3)) / count
    return 10.0 * torch.log10(data_range ** 2 / mse)


def region_ssim(ssim_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of an SSIM map over the masked pixels.

    Args:
        ssim_map: (B, C, h, w): ``h = H`` (``same`` padding) or ``H - 2 r`` (``valid``, border r).
        mask: (B, H, W) bool region at the image's size.

    Returns:
        (B,); NaN where no masked pixel has a map value.
    """
    r = (mask.shape[-2] - ssim_map.shape[-2]) // 2
    c = (mask.shape[-1] - ssim_map.shape[-1]) // 2
    m = mask[:, r:mask.shape[-2] - r, c:mask.shape[-1] - c][:, None].to(ssim_map.dtype)
    return (ssim_map * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * ssim_map.shape[1])


def region_lpips(layer_maps: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """LPIPS over the masked pixels from the per-layer distance maps (module docstring).

    Args:
        layer_maps: one (B, 1, h_l, w_l) map per layer (``LPIPS.layer_maps``).
        mask: (B, H, W) bool region at the image's size.

    Returns:
        (B,); NaN where the region is empty.
    """
    m = mask[:, None].to(layer_maps[0].dtype)
    total = None
    for d in layer_maps:
        w = F.adaptive_avg_pool2d(m, d.shape[-2:])
        value = (d * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))
        total = value if total is None else total + value
    return total
