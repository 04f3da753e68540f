"""Full-reference image metrics: PSNR and SSIM (differentiable, batched, any device).

Tensor API (all functions take ``(B, C, H, W)`` float tensors, values in ``[0, data_range]``):

- ``psnr(x, y, data_range=1.0, reduction='mean')``: per-image PSNR in dB. The MSE is taken per
  image over all channels and pixels (a 3-D pair, e.g. two ``(H, W, 3)`` images, is one image); ``reduction='mean'`` averages the *per-image* PSNRs (the
  GaussianAvatars / 3DGS protocol), ``'none'`` returns shape ``(B,)``. Identical images give
  ``inf``.
- ``ssim(x, y, window_size=11, sigma=1.5, data_range=1.0, reduction='mean', padding='valid')``:
  mean SSIM of each image (Wang et al. 2004), ``(B,)`` with ``reduction='none'``. Differentiable,
  so training uses ``D-SSIM = 1 - ssim(render, gt)``.
- ``hwc_to_bchw(img)``: ``(H, W, C)`` -> ``(1, C, H, W)`` and ``(N, H, W, C)`` -> ``(N, C, H, W)``
  for the ``(H, W, 3)`` images used elsewhere in the project (the renderer's ``(cams, H, W, 3)``
  output included).

SSIM definition (matches ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)`` to float precision):
local means/variances/covariance are weighted by a normalised separable Gaussian of the given
``sigma`` and ``window_size`` taps (11 taps <-> sigma 1.5, scipy's truncate 3.5), population
(not sample) covariance, ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``. The SSIM map is evaluated only
where the window fits inside the image ("valid" filtering, i.e. a border of
``(window_size - 1) // 2`` pixels is dropped, exactly skimage's crop) and averaged over pixels
and channels. This ``padding='valid'`` form is the standard metric and the training loss.

``padding='same'`` is the SSIM of 3D Gaussian Splatting's and GaussianAvatars' ``metrics.py``
(and of the 3DGS training loss): both images are zero-padded by ``(window_size - 1) // 2``
pixels on every side before the same filtering, so the map is ``(B, C, H, W)`` and the border
windows see zeros (their means, second moments and covariance include the padded zeros), and the
mean is over that full map. Everything else (taps, constants, formula) is shared.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "mse", "ssim", "ssim_map", "gaussian_window_1d", "hwc_to_bchw", "SSIM_PADDINGS"]

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or y.dim() != 4:
        raise ValueError(
            f"{name}: expected (B, C, H, W) tensors, got shapes {tuple(x.shape)} and "
            f"{tuple(y.shape)} (use hwc_to_bchw for (H, W, C) images)"
        )
    if x.shape != y.shape:
        raise ValueError(f"{name}: shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def hwc_to_bchw(img: torch.Tensor) -> torch.Tensor:
    """``(H, W, C)`` -> ``(1, C, H, W)``; ``(N, H, W, C)`` -> ``(N, C, H, W)``."""
    if img.dim() == 3:
        return img.permute(2, 0, 1).unsqueeze(0)
    if img.dim() == 4:
        return img.permute(0, 3, 1, 2)
    raise ValueError(f"hwc_to_bchw: expected (H, W, C) or (N, H, W, C), got {tuple(img.shape)}")


def mse(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error per image over ``(C, H, W)``; ``(B,)`` with ``reduction='none'``.

    A 3-D pair is taken as one image in any layout (``(H, W, 3)`` or ``(3, H, W)``: the MSE does
    not depend on it) and gives shape ``(1,)`` with ``reduction='none'``.
    """
    if x.dim() == 3 and y.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    _check_pair(x, y, "mse")
    per_image = (x - y).pow(2).flatten(1).mean(dim=1)
    return _reduce(per_image, reduction)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
         reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / mse)`` per image.

    ``reduction='mean'`` returns the mean over the batch of the per-image PSNRs (not the PSNR of
    the pooled MSE); ``'none'`` returns ``(B,)``. Identical images give ``+inf``. Like
    :func:`mse`, a 3-D pair is one image in any layout.
    """
    per_image_mse = mse(x, y, reduction="none")
    values = 10.0 * torch.log10((data_range ** 2) / per_image_mse)
    return _reduce(values, reduction)


def gaussian_window_1d(window_size: int = 11, sigma: float = 1.5,
                       dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1D Gaussian taps ``exp(-x^2 / (2 sigma^2))`` for ``x = -r..r``,
    ``r = (window_size - 1) // 2`` (the same taps as ``scipy.ndimage.gaussian_filter``)."""
    if window_size < 1 or window_size % 2 != 1:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = (window_size - 1) // 2
    coords = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (coords / sigma) ** 2)
    taps = taps / taps.sum()
    return taps.to(dtype=dtype, device=device)


def _filter_valid(img: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of ``(B, C, H, W)``, valid region only (no padding)."""
    channels = img.shape[1]
    k = taps.numel()
    kh = taps.view(1, 1, k, 1).expand(channels, 1, k, 1)
    kw = taps.view(1, 1, 1, k).expand(channels, 1, 1, k)
    out = F.conv2d(img, kh, groups=channels)
    return F.conv2d(out, kw, groups=channels)


SSIM_PADDINGS = ("valid", "same")


def ssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
             data_range: float = 1.0, padding: str = "valid") -> torch.Tensor:
    """SSIM map of ``(B, C, H, W)`` images.

    ``padding='valid'``: ``(B, C, H - window_size + 1, W - window_size + 1)``, windows inside
    the image only. ``padding='same'``: ``(B, C, H, W)``, the images zero-padded by
    ``(window_size - 1) // 2`` on each side first (3DGS / GaussianAvatars ``metrics.py``).
    """
    _check_pair(x, y, "ssim")
    if padding not in SSIM_PADDINGS:
        raise ValueError(f"ssim: padding must be one of {SSIM_PADDINGS}, got {padding!r}")
    h, w = x.shape[-2:]
    if padding == "valid" and (h < window_size or w < window_size):
        raise ValueError(
            f"ssim: image {h}x{w} is smaller than the {window_size}x{window_size} window"
        )
    if not x.is_floating_point():
        x = x.float()
    if not y.is_floating_point():
        y = y.float()
    y = y.to(x.dtype)
    taps = gaussian_window_1d(window_size, sigma, dtype=x.dtype, device=x.device)
    if padding == "same":
        # Zero-pad the images themselves: the valid filtering below then sees exactly the
        # zero-padded convolutions conv(x), conv(x * x), ... of the "same" formulation.
        r = (window_size - 1) // 2
        x = F.pad(x, (r, r, r, r), mode="constant", value=0.0)
        y = F.pad(y, (r, r, r, r), mode="constant", value=0.0)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    # Second moments are taken about the mid-range value c (var = E[(x-c)^2] - (mu-c)^2, exact
    # algebraically), which keeps float32 cancellation error well below 1e-6 on [0, R] data.
    # One batched filtering pass over the five moment images.
    c = 0.5 * data_range
    xc, yc = x - c, y - c
    stacked = torch.cat([x, y, xc * xc, yc * yc, xc * yc], dim=1)
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(stacked, taps).chunk(5, dim=1)
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    mu_xy = mu_x * mu_y
    mu_xc, mu_yc = mu_x - c, mu_y - c
    var_x = e_xx - mu_xc * mu_xc
    var_y = e_yy - mu_yc * mu_yc
    cov_xy = e_xy - mu_xc * mu_yc
    num = (2.0 * mu_xy + c1) * (2.0 * cov_xy + c2)
    den = (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    return num / den


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0, reduction: str = "mean", padding: str = "valid") -> torch.Tensor:
    """Mean SSIM per image of ``(B, C, H, W)`` tensors (see the module docstring).

    Returns a scalar (mean over the batch) with ``reduction='mean'``, or ``(B,)`` with
    ``reduction='none'``. ``padding``: ``'valid'`` (scikit-image's metric, the default) or
    ``'same'`` (zero-padded, 3DGS / GaussianAvatars ``metrics.py``). Differentiable with respect
    to both inputs. For the training loss use ``1 - ssim(render, gt)``.
    """
    values = ssim_map(x, y, window_size, sigma, data_range, padding).flatten(1).mean(dim=1)
    return _reduce(values, reduction)


def psnr_from_mse(mse_value: float, data_range: float = 1.0) -> float:
    """Scalar helper: PSNR in dB of a given MSE (``inf`` for 0)."""
    if mse_value <= 0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse_value)


def error_map(render: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) heat map of the per-pixel L1 error (black = 0, bright = >= 0.25)."""
    err = ((render - gt).abs().mean(-1) / 0.25).clamp(0, 1)
    return torch.stack([err, err ** 2, torch.zeros_like(err)], -1)


def comparison_panel(render: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(H, 3W, 3) render | ground truth | error map side by side, in [0, 1] (videos, TensorBoard)."""
    return torch.cat([render, gt, error_map(render, gt)], dim=1).clamp(0, 1)

