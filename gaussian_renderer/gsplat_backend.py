"""Thin adapter over ``gsplat.rasterization`` (CUDA) with the torch backend's names and meta keys.

Registered as the ``gsplat`` backend: CUDA, float32, second in ``auto``'s order. gsplat is imported
on first use (it compiles its CUDA code then), so this module imports where gsplat is absent.
"""
from __future__ import annotations

import torch

from .errors import BackendUnavailableError
from .registry import Backend, register_backend

_FIX = "install it with `pip install -r requirements-gpu.txt` on a machine with CUDA"


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


def gsplat_import_error() -> str | None:
    """None when the gsplat package imports (it may still fail to compile or run), else why not."""
    try:
        _import_gsplat()
        return None
    except ImportError as e:
        lines = str(e).strip().splitlines()
        return f"gsplat does not import ({lines[0] if lines else type(e).__name__})"


def gsplat_available() -> bool:
    """True when the gsplat package imports (it may still need CUDA to run: see
    ``gaussian_renderer.probe_backend`` for whether it actually works)."""
    return gsplat_import_error() is None


# Device types gsplat's kernels run on. A module attribute so that tests can exercise the adapter
# with a stand-in gsplat module on the CPU.
SUPPORTED_DEVICE_TYPES = ("cuda",)


def rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    near_plane, far_plane, sh_degree, backgrounds, render_mode, eps2d, tile_size,
):
    """Arguments already validated by :func:`gaussian_renderer.api.rasterize`.

    gsplat 1.5 takes one opacity per splat for all cameras; per-camera opacities (C, N) are
    rendered one camera at a time and the outputs stacked, so the API is the same on every backend.
    """
    try:
        gsplat = _import_gsplat()
    except ImportError as e:
        raise BackendUnavailableError(
            f"rasterize(backend='gsplat'): the gsplat package cannot be imported ({e}); {_FIX}, "
            "or use backend='torch'") from None
    if means.device.type not in SUPPORTED_DEVICE_TYPES:
        raise BackendUnavailableError(
            f"rasterize(backend='gsplat') needs CUDA tensors, got tensors on '{means.device}'; move the inputs "
            "to a CUDA device or use backend='torch' (or 'auto')")
    if means.dtype != torch.float32:
        raise BackendUnavailableError(
            f"rasterize(backend='gsplat') needs float32 tensors, got {means.dtype}; use backend='torch'")
    C = viewmats.shape[0]
    if backgrounds is not None and render_mode in ("D", "ED"):
        backgrounds = None
    kwargs = dict(near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree, tile_size=tile_size,
                  render_mode=render_mode)
    if opacities.dim() == 1 or C == 1:
        return _rasterize_cameras(gsplat, means, quats, scales, opacities.reshape(-1), colors, viewmats, Ks,
                                  backgrounds, width, height, **kwargs)
    # Per-camera opacities: one call per camera, outputs stacked along the camera axis.
    colors_per_camera = colors.dim() == (3 if sh_degree is None else 4)
    outs = []
    for c in range(C):
        cam_colors = colors[c:c + 1] if colors_per_camera else colors
        outs.append(_rasterize_cameras(gsplat, means, quats, scales, opacities[c], cam_colors, viewmats[c:c + 1],
                                       Ks[c:c + 1], None if backgrounds is None else backgrounds[c:c + 1],
                                       width, height, **kwargs))
    render = torch.cat([o[0] for o in outs])
    alphas = torch.cat([o[1] for o in outs])
    meta = dict(outs[0][2])
    for key in ("radii", "radii_xy", "depths", "visible", "conics", "opacities"):
        meta[key] = torch.cat([o[2][key] for o in outs])
    meta["means2d"] = _stacked_means2d([o[2]["means2d"] for o in outs])
    meta["n_cameras"] = C
    return render, alphas, meta


def _stacked_means2d(per_camera: list) -> torch.Tensor:
    """(C, N, 2) leaf holding the per-camera (1, N, 2) ``means2d``; backward fills its ``.grad``
    camera by camera through hooks, so densification reads one tensor whatever the call pattern."""
    stacked = torch.cat([m.detach() for m in per_camera])
    if not any(m.requires_grad for m in per_camera):
        return stacked
    stacked.requires_grad_(True)

    def hook_for(c):
        def hook(grad):
            if stacked.grad is None:
                stacked.grad = torch.zeros_like(stacked)
            stacked.grad[c] += grad[0]
        return hook

    for c, m in enumerate(per_camera):
        if m.requires_grad:
            m.register_hook(hook_for(c))
    return stacked


def _rasterize_cameras(gsplat, means, quats, scales, opacities, colors, viewmats, Ks, backgrounds, width, height, *,
                       near_plane, far_plane, eps2d, sh_degree, tile_size, render_mode):
    """One ``gsplat.rasterization`` call with (N,) opacities; its failures become one-line errors."""
    C, N = viewmats.shape[0], means.shape[0]
    means, quats, scales, opacities, colors, viewmats, Ks = (
        t.contiguous() for t in (means, quats, scales, opacities, colors, viewmats, Ks))
    try:
        render, alphas, gmeta = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
            packed=False, tile_size=tile_size, render_mode=render_mode,
            backgrounds=None if backgrounds is None else backgrounds.contiguous(),
            rasterize_mode="classic", radius_clip=0.0, absgrad=False,
        )
    except Exception as e:  # first-use CUDA compile failures surface here
        lines = str(e).strip().splitlines()
        raise BackendUnavailableError(
            f"rasterize(backend='gsplat') failed: {type(e).__name__}: {lines[0] if lines else ''}; {_FIX}, "
            "or use backend='torch'") from e
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
    opac = gmeta.get("opacities")
    if opac is None or opac.shape != (C, N):
        opac = opacities.unsqueeze(0).expand(C, N)
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


BACKEND = register_backend(Backend(
    name="gsplat", rasterize=rasterize_gsplat, import_error=gsplat_import_error,
    fix="gsplat compiles its CUDA code on first use with the local CUDA toolkit (nvcc matching torch's CUDA "
        "version); install it with `pip install -r requirements-gpu.txt`, or use --backend torch",
    devices=SUPPORTED_DEVICE_TYPES, dtypes=(torch.float32,), auto_rank=20,
))
