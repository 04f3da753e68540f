"""``rasterize()`` argument validation: every check and its one-line error, and the normalised
call (:class:`RasterizeCall`) that the backends receive.

Errors are :class:`~gaussian_renderer.errors.RasterizerArgumentError` (a ValueError) naming the
argument and the expected shape, e.g. "rasterize(): `quats` must have shape (N, 4) = (5, 4), got
(5, 3)". The checks run in a fixed order (tensors, sizes, options, colours, backgrounds), so a
call with several mistakes always reports the same one first.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NoReturn, Optional

import torch

from .errors import RasterizerArgumentError
from .registry import unknown_backend_message
from .sh import num_sh_bases

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def fail(msg: str) -> NoReturn:
    raise RasterizerArgumentError(f"rasterize(): {msg}")


@dataclass(frozen=True)
class RasterizeCall:
    """A validated ``rasterize()`` call (C cameras, N splats): the tensors as given, except
    ``backgrounds`` expanded to (C, D); Python ints and floats for the sizes and options.

    means (N, 3), quats (N, 4), scales (N, 3), opacities (N,) or (C, N), colors (N, D) /
    (C, N, D) or SH (N, K, 3) / (C, N, K, 3), viewmats (C, 4, 4), Ks (C, 3, 3), backgrounds
    (C, D) or None; all of ``means``' dtype (float32 or float64) and device.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor
    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int
    near_plane: float
    far_plane: float
    sh_degree: Optional[int]
    backgrounds: Optional[torch.Tensor]
    render_mode: str
    eps2d: float
    tile_size: int
    isect_capacity: Optional[int]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def positional(self) -> tuple:
        """The positional arguments of a backend's rasterize function."""
        return (self.means, self.quats, self.scales, self.opacities, self.colors, self.viewmats, self.Ks,
                self.width, self.height)

    def options(self) -> dict:
        """The keyword arguments every backend takes (``isect_capacity`` is added by the dispatch
        for the backends that take it)."""
        return dict(near_plane=self.near_plane, far_plane=self.far_plane, sh_degree=self.sh_degree,
                    backgrounds=self.backgrounds, render_mode=self.render_mode, eps2d=self.eps2d,
                    tile_size=self.tile_size)


def _shape(t) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _check_tensor(name, t, expected: str, ndims, ref_dtype=None, ref_device=None):
    if not isinstance(t, torch.Tensor):
        fail(f"`{name}` must be a torch.Tensor of shape {expected}, got {type(t).__name__}")
    if t.dim() not in ndims:
        fail(f"`{name}` must have shape {expected}, got {_shape(t)}")
    if not t.is_floating_point():
        fail(f"`{name}` must be a floating-point tensor of shape {expected}, got dtype {t.dtype}")
    if ref_dtype is not None and t.dtype != ref_dtype:
        fail(f"`{name}` has dtype {t.dtype} but `means` has dtype {ref_dtype}; all inputs must share one dtype")
    if ref_device is not None and t.device != ref_device:
        fail(f"`{name}` is on device '{t.device}' but `means` is on '{ref_device}'; all inputs must share one device")


def _check_dims(name, t, expected: str, dims):
    """dims: expected sizes, None = any."""
    if t.dim() != len(dims) or any(d is not None and s != d for s, d in zip(t.shape, dims)):
        fail(f"`{name}` must have shape {expected}, got {_shape(t)}")


def validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, near_plane, far_plane,
             sh_degree, backgrounds, render_mode, backend, eps2d, tile_size, packed, rasterize_mode,
             isect_capacity) -> RasterizeCall:
    """Check ``rasterize()``'s arguments (documented there) and return the normalised call.

    ``backend`` must be "auto" or a registered name; whether the chosen backend takes
    ``isect_capacity`` is checked when it is known (``dispatch.run_backend``).

    Raises:
        RasterizerArgumentError naming the first bad argument and its expected shape.
    """
    if not isinstance(means, torch.Tensor):
        fail(f"`means` must be a torch.Tensor of shape (N, 3), got {type(means).__name__}")
    _check_tensor("means", means, "(N, 3)", (2,))
    _check_dims("means", means, "(N, 3)", (None, 3))
    N = means.shape[0]
    dt, dev = means.dtype, means.device
    if dt not in (torch.float32, torch.float64):
        fail(f"`means` must be float32 or float64 (all inputs share its dtype), got {dt}")
    _check_tensor("quats", quats, f"(N, 4) = ({N}, 4)", (2,), dt, dev)
    _check_dims("quats", quats, f"(N, 4) = ({N}, 4)", (N, 4))
    _check_tensor("scales", scales, f"(N, 3) = ({N}, 3)", (2,), dt, dev)
    _check_dims("scales", scales, f"(N, 3) = ({N}, 3)", (N, 3))
    _check_tensor("viewmats", viewmats, "(C, 4, 4)", (3,), dt, dev)
    _check_dims("viewmats", viewmats, "(C, 4, 4)", (None, 4, 4))
    C = viewmats.shape[0]
    if C == 0:
        fail("`viewmats` must hold at least one camera, got shape (0, 4, 4)")
    _check_tensor("Ks", Ks, f"(C, 3, 3) = ({C}, 3, 3)", (3,), dt, dev)
    _check_dims("Ks", Ks, f"(C, 3, 3) = ({C}, 3, 3) matching `viewmats`", (C, 3, 3))
    _check_tensor("opacities", opacities, f"(N,) = ({N},) or (C, N) = ({C}, {N})", (1, 2), dt, dev)
    if opacities.shape not in ((N,), (C, N)):
        fail(f"`opacities` must have shape (N,) = ({N},) or (C, N) = ({C}, {N}), got {_shape(opacities)}")

    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) <= 0:
            fail(f"`{name}` must be a positive int, got {v!r}")
    if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral) or not 1 <= int(tile_size) <= 64:
        fail(f"`tile_size` must be an int in 1..64, got {tile_size!r}")
    if not (float(near_plane) < float(far_plane)):
        fail(f"`near_plane` ({near_plane}) must be smaller than `far_plane` ({far_plane})")
    if not float(eps2d) >= 0:
        fail(f"`eps2d` must be >= 0, got {eps2d}")
    if render_mode not in RENDER_MODES:
        fail(f"`render_mode` must be one of {', '.join(RENDER_MODES)}, got {render_mode!r}")
    backend_error = unknown_backend_message(backend, "`backend`")
    if backend_error is not None:
        fail(backend_error)
    if packed:
        fail("`packed=True` is not supported; meta tensors are always (C, N, ...) (packed=False)")
    if isect_capacity is not None and (isinstance(isect_capacity, bool) or not isinstance(isect_capacity, numbers.Integral)
                                       or int(isect_capacity) < 1):
        fail(f"`isect_capacity` must be None or a positive int, got {isect_capacity!r}")
    if rasterize_mode != "classic":
        fail(f"`rasterize_mode` must be 'classic' (no antialiasing compensation), got {rasterize_mode!r}")

    if sh_degree is None:
        exp = f"(N, D) = ({N}, D) or (C, N, D) = ({C}, {N}, D) when sh_degree is None"
        _check_tensor("colors", colors, exp, (2, 3), dt, dev)
        if colors.shape[-2] != N or (colors.dim() == 3 and colors.shape[0] != C) or colors.shape[-1] < 1:
            fail(f"`colors` must have shape {exp}, got {_shape(colors)}")
        n_channels = colors.shape[-1]
    else:
        if isinstance(sh_degree, bool) or not isinstance(sh_degree, numbers.Integral) or not 0 <= sh_degree <= 3:
            fail(f"`sh_degree` must be None or an int in 0..3, got {sh_degree!r}")
        sh_degree = int(sh_degree)
        k = num_sh_bases(sh_degree)
        exp = f"(N, K, 3) = ({N}, K>={k}, 3) or (C, N, K, 3) with sh_degree={sh_degree}"
        _check_tensor("colors", colors, exp, (3, 4), dt, dev)
        if (colors.shape[-1] != 3 or colors.shape[-3] != N or colors.shape[-2] < k
                or (colors.dim() == 4 and colors.shape[0] != C)):
            fail(f"`colors` (SH coefficients) must have shape {exp}, got {_shape(colors)}")
        n_channels = 3

    if backgrounds is not None:
        exp = f"(C, D) = ({C}, {n_channels}) or (D,) = ({n_channels},)"
        _check_tensor("backgrounds", backgrounds, exp, (1, 2), dt, dev)
        if backgrounds.shape not in ((C, n_channels), (n_channels,)):
            fail(f"`backgrounds` must have shape {exp}, got {_shape(backgrounds)}")
        if backgrounds.dim() == 1:
            backgrounds = backgrounds.unsqueeze(0).expand(C, n_channels)

    return RasterizeCall(
        means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks,
        width=int(width), height=int(height), near_plane=float(near_plane), far_plane=float(far_plane),
        sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode, eps2d=float(eps2d),
        tile_size=int(tile_size), isect_capacity=None if isect_capacity is None else int(isect_capacity))
