"""``rasterize()``: the one entry point (gsplat 1.x ``rasterization()`` names): validation
(``arguments.py``), the ``auto`` choice (``backends.py``), dispatch to a registered backend
(``dispatch.py``)."""
from __future__ import annotations

import torch

from .arguments import RENDER_MODES, validate
from .backends import select_backend
from .dispatch import run_backend
from .errors import RasterizerArgumentError
from .registry import AUTO, auto_order

__all__ = ["rasterize", "RENDER_MODES", "RasterizerArgumentError"]


def rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: int | None = None,
    backgrounds: torch.Tensor | None = None,
    render_mode: str = "RGB",
    backend: str = "auto",
    eps2d: float = 0.3,
    tile_size: int = 16,
    packed: bool = False,
    rasterize_mode: str = "classic",
    isect_capacity: int | None = None,
):
    """Differentiable rasterization of N 3D Gaussians into C cameras (gsplat 1.x conventions).

    Args:
        means: (N, 3) world-space centres.
        quats: (N, 4) wxyz rotations (any norm; normalised here).
        scales: (N, 3) activated (positive) scales.
        opacities: (N,) (or (C, N)) activated opacities in [0, 1].
        colors: (N, D) or (C, N, D) colours / features of any D when ``sh_degree`` is None;
            (N, K, 3) or (C, N, K, 3) SH coefficients with K >= (sh_degree + 1)^2 otherwise
            (colour = SH(view dir) + 0.5, clamped at 0; view dir = mean - camera centre).
        viewmats: (C, 4, 4) world-to-camera (OpenCV: x right, y down, z forward).
        Ks: (C, 3, 3) pixel intrinsics (fx, fy, cx, cy; skew ignored). Pixel (i, j) has its centre
            at (i + 0.5, j + 0.5).
        width, height: image size in pixels.
        near_plane, far_plane: splats with camera depth outside [near, far] are invisible.
        sh_degree: None (``colors`` are final colours/features) or 0..3.
        backgrounds: (C, D) (or (D,)) colour composited under the splats (colour channels only).
        render_mode: "RGB" (D channels), "D" (accumulated depth sum w_i z_i, 1 channel), "ED"
            (expected depth D / alpha), "RGB+D", "RGB+ED" (D + 1 channels, depth last).
        backend: a registered backend (``registry.backend_names()``: "torch" (any device),
            "triton" (CUDA; Triton compositing kernels), "gsplat" (CUDA + gsplat package)) or
            "auto": the first backend of ``registry.auto_order(device, dtype)`` (CUDA float32:
            triton, gsplat, torch; else torch) that passes its one-time parity probe (skipped ones
            are named in one warning line each). See ``backends.select_backend``.
        eps2d: low-pass filter added to the diagonal of every 2D covariance (pixels^2).
        tile_size: tile edge in pixels (results do not depend on it for the torch backend).
        packed, rasterize_mode: only gsplat's defaults here (False, "classic") are supported.
        isect_capacity: None, or (backend "triton" only) a fixed length for the list of
            (tile, splat) pairs. Then the call never waits for the device (no host-device sync),
            so it can be captured in a CUDA graph; pairs beyond it (the farthest splats') are
            dropped and ``meta["isect_overflow"]`` (0-dim bool tensor) says so. Size it from an
            earlier frame's ``meta["n_isects"]`` with some headroom.

    Returns:
        render_colors (C, H, W, D[+1]), render_alphas (C, H, W, 1), meta dict with
        ``means2d`` (C, N, 2) pixel positions (``retain_grad()`` already called when they require
        grad; their ``.grad`` after backward is the densification signal, gsplat absgrad=False),
        ``radii`` (C, N) int32 (0 = invisible), ``radii_xy`` (C, N, 2) int32, ``depths`` (C, N)
        camera z, ``visible`` (C, N) bool, ``conics`` (C, N, 3) inverse 2D covariance (a, b, c)
        including the low-pass, ``opacities`` (C, N) (no compensation: classic mode), ``colors``
        (C, N, D) evaluated colours (torch backend), ``backend``, ``width``, ``height``,
        ``n_cameras``, ``tile_size``, ``tile_width``, ``tile_height``, ``n_isects`` (torch and triton:
        the number of (tile, splat) pairs; an int, a 0-dim tensor with ``isect_capacity``).
    Raises:
        RasterizerArgumentError (a ValueError) naming the bad argument and its expected shape
        (an unregistered ``backend``: one line listing the registered names);
        BackendUnavailableError when the backend cannot run on these tensors.
    """
    call = validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
                    far_plane=far_plane, sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode,
                    backend=backend, eps2d=eps2d, tile_size=tile_size, packed=packed, rasterize_mode=rasterize_mode,
                    isect_capacity=isect_capacity)
    if backend == AUTO:
        # Only the backends that take this device and dtype are candidates (the accelerated ones are
        # float32-only); the probe runs once per process and device, the choice is cached.
        backend = select_backend(AUTO, call.device, candidates=auto_order(call.device, call.dtype)).name
    return run_backend(backend, call)
