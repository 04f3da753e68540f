"""Thin adapter over ``gsplat.rasterization`` (CUDA) with the torch backend's names and meta keys."""
from __future__ import annotations

import torch

from utils.errors import UserFacingError

_FIX = "install it with `pip install -r requirements-gpu.txt` on a machine with CUDA"


class BackendUnavailableError(UserFacingError, RuntimeError):
    """The requested rasterizer backend cannot run here (missing package or no CUDA tensors)."""


_cache: dict = {}


def _import_gsplat():
    """Import gsplat lazily; returns the module or raises ImportError (with the original cause)."""
    if "mod" not in _cache:
        try:
            import packaging  # noqa: F401  (gsplat 1.5.x imports it without declaring it)
            import gsplat
            _cache["mod"] = gsplat
        except Exception as e:  # ImportError, or a broken CUDA extension build
            _cache["mod"] = None
            _cache["err"] = e
    if _cache["mod"] is None:
        raise ImportError(str(_cache.get("err")))
    return _cache["mod"]


def gsplat_available() -> bool:
    """True when the gsplat package imports (it may still need CUDA to run)."""
    try:
        _import_gsplat()
        return True
    except ImportError:
        return False


def rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    near_plane, far_plane, sh_degree, backgrounds, render_mode, eps2d, tile_size,
):
    """Arguments already validated by :func:`gaussian_renderer.api.rasterize`."""
    try:
        gsplat = _import_gsplat()
    except ImportError as e:
        raise BackendUnavailableError(
            f"rasterize(backend='gsplat'): the gsplat package cannot be imported ({e}); {_FIX}, "
            "or use backend='torch'") from None
    if means.device.type != "cuda":
        raise BackendUnavailableError(
            f"rasterize(backend='gsplat') needs CUDA tensors, got tensors on '{means.device}'; move the inputs "
            "to a CUDA device or use backend='torch' (or 'auto')")
    if means.dtype != torch.float32:
        raise BackendUnavailableError(
            f"rasterize(backend='gsplat') needs float32 tensors, got {means.dtype}; use backend='torch'")
    C = viewmats.shape[0]
    if backgrounds is not None and render_mode in ("D", "ED"):
        backgrounds = None
    if backgrounds is not None:
        backgrounds = backgrounds.contiguous()
    means, quats, scales, opacities, colors, viewmats, Ks = (
        t.contiguous() for t in (means, quats, scales, opacities, colors, viewmats, Ks))
    render, alphas, gmeta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode,
        rasterize_mode="classic", radius_clip=0.0, absgrad=False,
    )
    means2d = gmeta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = gmeta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5: per-axis radii (C, N, 2)
        radii_xy = radii.to(torch.int32)
        radii = radii.amax(dim=-1)
    else:
        radii_xy = torch.stack([radii, radii], dim=-1).to(torch.int32)
    radii = radii.to(torch.int32)
    N = means.shape[0]
    opac = gmeta.get("opacities")
    if opac is None or opac.shape != (C, N):
        opac = opacities if opacities.dim() == 2 else opacities.unsqueeze(0).expand(C, N)
    meta = dict(gmeta)
    meta.update({
        "backend": "gsplat",
        "means2d": means2d,
        "radii": radii,
        "radii_xy": radii_xy,
        "depths": gmeta["depths"],
        "visible": radii > 0,
        "conics": gmeta["conics"],
        "opacities": opac,
        "width": width,
        "height": height,
        "n_cameras": C,
        "tile_size": tile_size,
    })
    return render, alphas, meta
