"""``rasterize()``: argument validation and backend dispatch (gsplat 1.x ``rasterization()`` names)."""
from __future__ import annotations

import numbers

import torch

from .backends import select_backend
from .gsplat_backend import rasterize_gsplat
from .sh import num_sh_bases
from .torch_backend import rasterize_torch

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "torch", "triton", "gsplat")


class RasterizerArgumentError(ValueError):
    """A ``rasterize()`` argument has the wrong shape, dtype, device or value."""


def _fail(msg: str):
    raise RasterizerArgumentError(f"rasterize(): {msg}")


def _shape(t) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _check_tensor(name, t, expected: str, ndims, ref_dtype=None, ref_device=None):
    if not isinstance(t, torch.Tensor):
        _fail(f"`{name}` must be a torch.Tensor of shape {expected}, got {type(t).__name__}")
    if t.dim() not in ndims:
        _fail(f"`{name}` must have shape {expected}, got {_shape(t)}")
    if not t.is_floating_point():
        _fail(f"`{name}` must be a floating-point tensor of shape {expected}, got dtype {t.dtype}")
    if ref_dtype is not None and t.dtype != ref_dtype:
        _fail(f"`{name}` has dtype {t.dtype} but `means` has dtype {ref_dtype}; all inputs must share one dtype")
    if ref_device is not None and t.device != ref_device:
        _fail(f"`{name}` is on device '{t.device}' but `means` is on '{ref_device}'; all inputs must share one device")


def _check_dims(name, t, expected: str, dims):
    """dims: expected sizes, None = any."""
    if t.dim() != len(dims) or any(d is not None and s != d for s, d in zip(t.shape, dims)):
        _fail(f"`{name}` must have shape {expected}, got {_shape(t)}")


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
        backend: "torch" (any device), "triton" (CUDA; Triton compositing kernels), "gsplat"
            (CUDA + gsplat package) or "auto": on CUDA float32 tensors the first backend of
            ``backends.AUTO_ORDER_CUDA`` that passes its one-time parity probe (skipped ones are
            named in one warning line each), else torch. See ``backends.select_backend``.
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
        RasterizerArgumentError (a ValueError) naming the bad argument and its expected shape.
    """
    # ---- argument validation -------------------------------------------------------------------
    if not isinstance(means, torch.Tensor):
        _fail(f"`means` must be a torch.Tensor of shape (N, 3), got {type(means).__name__}")
    _check_tensor("means", means, "(N, 3)", (2,))
    _check_dims("means", means, "(N, 3)", (None, 3))
    N = means.shape[0]
    dt, dev = means.dtype, means.device
    if dt not in (torch.float32, torch.float64):
        _fail(f"`means` must be float32 or float64 (all inputs share its dtype), got {dt}")
    _check_tensor("quats", quats, f"(N, 4) = ({N}, 4)", (2,), dt, dev)
    _check_dims("quats", quats, f"(N, 4) = ({N}, 4)", (N, 4))
    _check_tensor("scales", scales, f"(N, 3) = ({N}, 3)", (2,), dt, dev)
    _check_dims("scales", scales, f"(N, 3) = ({N}, 3)", (N, 3))
    _check_tensor("viewmats", viewmats, "(C, 4, 4)", (3,), dt, dev)
    _check_dims("viewmats", viewmats, "(C, 4, 4)", (None, 4, 4))
    C = viewmats.shape[0]
    if C == 0:
        _fail("`viewmats` must hold at least one camera, got shape (0, 4, 4)")
    _check_tensor("Ks", Ks, f"(C, 3, 3) = ({C}, 3, 3)", (3,), dt, dev)
    _check_dims("Ks", Ks, f"(C, 3, 3) = ({C}, 3, 3) matching `viewmats`", (C, 3, 3))
    _check_tensor("opacities", opacities, f"(N,) = ({N},) or (C, N) = ({C}, {N})", (1, 2), dt, dev)
    if opacities.shape not in ((N,), (C, N)):
        _fail(f"`opacities` must have shape (N,) = ({N},) or (C, N) = ({C}, {N}), got {_shape(opacities)}")

    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) <= 0:
            _fail(f"`{name}` must be a positive int, got {v!r}")
    width, height = int(width), int(height)
    if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral) or not 1 <= int(tile_size) <= 64:
        _fail(f"`tile_size` must be an int in 1..64, got {tile_size!r}")
    tile_size = int(tile_size)
    if not (float(near_plane) < float(far_plane)):
        _fail(f"`near_plane` ({near_plane}) must be smaller than `far_plane` ({far_plane})")
    if not float(eps2d) >= 0:
        _fail(f"`eps2d` must be >= 0, got {eps2d}")
    if render_mode not in RENDER_MODES:
        _fail(f"`render_mode` must be one of {', '.join(RENDER_MODES)}, got {render_mode!r}")
    if backend not in BACKENDS:
        _fail(f"`backend` must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if packed:
        _fail("`packed=True` is not supported; meta tensors are always (C, N, ...) (packed=False)")
    if isect_capacity is not None and (isinstance(isect_capacity, bool) or not isinstance(isect_capacity, numbers.Integral)
                                       or int(isect_capacity) < 1):
        _fail(f"`isect_capacity` must be None or a positive int, got {isect_capacity!r}")
    if rasterize_mode != "classic":
        _fail(f"`rasterize_mode` must be 'classic' (no antialiasing compensation), got {rasterize_mode!r}")

    if sh_degree is None:
        exp = f"(N, D) = ({N}, D) or (C, N, D) = ({C}, {N}, D) when sh_degree is None"
        _check_tensor("colors", colors, exp, (2, 3), dt, dev)
        if colors.shape[-2] != N or (colors.dim() == 3 and colors.shape[0] != C) or colors.shape[-1] < 1:
            _fail(f"`colors` must have shape {exp}, got {_shape(colors)}")
        n_channels = colors.shape[-1]
    else:
        if isinstance(sh_degree, bool) or not isinstance(sh_degree, numbers.Integral) or not 0 <= sh_degree <= 3:
            _fail(f"`sh_degree` must be None or an int in 0..3, got {sh_degree!r}")
        sh_degree = int(sh_degree)
        k = num_sh_bases(sh_degree)
        exp = f"(N, K, 3) = ({N}, K>={k}, 3) or (C, N, K, 3) with sh_degree={sh_degree}"
        _check_tensor("colors", colors, exp, (3, 4), dt, dev)
        if (colors.shape[-1] != 3 or colors.shape[-3] != N or colors.shape[-2] < k
                or (colors.dim() == 4 and colors.shape[0] != C)):
            _fail(f"`colors` (SH coefficients) must have shape {exp}, got {_shape(colors)}")
        n_channels = 3

    if backgrounds is not None:
        exp = f"(C, D) = ({C}, {n_channels}) or (D,) = ({n_channels},)"
        _check_tensor("backgrounds", backgrounds, exp, (1, 2), dt, dev)
        if backgrounds.shape not in ((C, n_channels), (n_channels,)):
            _fail(f"`backgrounds` must have shape {exp}, got {_shape(backgrounds)}")
        if backgrounds.dim() == 1:
            backgrounds = backgrounds.unsqueeze(0).expand(C, n_channels)

    # ---- dispatch ------------------------------------------------------------------------------
    if backend == "auto":
        # The accelerated backends are float32-only; the probe runs once per process and device.
        backend = select_backend("auto", dev).name if dt == torch.float32 else "torch"
    kwargs = dict(near_plane=float(near_plane), far_plane=float(far_plane), sh_degree=sh_degree,
                  backgrounds=backgrounds, render_mode=render_mode, eps2d=float(eps2d), tile_size=tile_size)
    if isect_capacity is not None and backend != "triton":
        _fail(f"`isect_capacity` (a sync-free, CUDA-graph-capturable call) needs backend='triton', "
              f"got backend {backend!r}; leave it None for the other backends")
    if backend == "gsplat":
        return rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
    if backend == "triton":
        from .triton_backend import rasterize_triton  # imports triton: only when asked for
        return rasterize_triton(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs,
                                isect_capacity=None if isect_capacity is None else int(isect_capacity))
    return rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
