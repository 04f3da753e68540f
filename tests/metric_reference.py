"""Independent reference computations of the metric sets, written from their definitions with
numpy/scipy only (no code shared with utils/image_metrics.py or utils/lpips.py).

- :func:`ga_ssim`: the SSIM of 3D Gaussian Splatting's and GaussianAvatars' ``metrics.py``: an
  11x11 Gaussian window (sigma 1.5) applied by a zero-padded "same" 2D convolution
  (``scipy.ndimage.convolve(..., mode="constant", cval=0)``), moments as
  ``E[x^2] - E[x]^2``, C1 = 0.01^2, C2 = 0.03^2, per channel, mean of the full H x W map.
- :func:`standard_ssim`: scikit-image's ``structural_similarity`` with Gaussian weights.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve
from skimage.metrics import structural_similarity


def gaussian_kernel_2d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised ``(size, size)`` Gaussian window, the outer product of 1D taps."""
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g)


def ga_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two ``(H, W, C)`` float images, zero-padded "same" filtering."""
    k = gaussian_kernel_2d()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    maps = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)

        def filt(img):
            return convolve(img, k, mode="constant", cval=0.0)

        mu_x, mu_y = filt(x), filt(y)
        var_x = filt(x * x) - mu_x ** 2
        var_y = filt(y * y) - mu_y ** 2
        cov = filt(x * y) - mu_x * mu_y
        maps.append(((2 * mu_x * mu_y + c1) * (2 * cov + c2))
                    / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    return float(np.mean(maps))


def standard_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """scikit-image's SSIM of two ``(H, W, C)`` images (valid region, Gaussian weights)."""
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=data_range,
                                 channel_axis=-1)
