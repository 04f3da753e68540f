"""Pure-PyTorch tile rasterizer (any device): projection -> SH -> binning -> compositing.

The part before compositing (projection, SH colours, per-splat features, backgrounds) and the meta
dict are shared with the Triton backend (``triton_backend.py``) through :func:`prepare_splats`,
:func:`finish_render` and :func:`build_meta`, so both backends feed their compositors identical
tensors.

Registered as the ``torch`` backend: the reference (any device, float32 and float64), last in
``auto``'s order.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch

from .compositing import composite
from .projection import camera_centers, project_gaussians, quat_scale_to_covar
from .registry import REFERENCE_BACKEND, Backend, register_backend
from .sh import eval_sh
from .tiles import TilePlan, bin_gaussians, plan_chunks

# Elements of one (tiles, pixels, K) work tensor; the compositing keeps 3 (forward) or 6 (backward)
# of them alive, i.e. ~48 MB in float32 backward. Tiles with longer lists are split in K-blocks.
WORK_BUDGET = 1 << 19
K_BLOCK = 256


@dataclass
class SplatInputs:
    """Everything the compositor needs, per camera (C cameras, N splats, D feature channels).

    ``proj``: the dict of :func:`projection.project_gaussians` (means2d (C, N, 2) with
    ``retain_grad()`` called when it requires grad, conics (C, N, 3), depths (C, N), radii_xy
    (C, N, 2) int32, radii (C, N) int32, visible (C, N) bool); ``opacities`` (C, N); ``feats``
    (C, N, D) composited features (colours, then the depth channel when the mode has one);
    ``backgrounds`` (C, D) or None (zero under the depth channel); ``rgb`` (C, N, D_rgb) evaluated
    colours or None (depth-only modes).
    """

    proj: dict
    opacities: torch.Tensor
    feats: torch.Tensor
    backgrounds: torch.Tensor | None
    rgb: torch.Tensor | None


# Set by compiled_projection(): prepare_splats then projects through a torch.compile'd graph.
_COMPILED_PROJECTION: ContextVar[bool] = ContextVar("compiled_projection", default=False)


@contextmanager
def compiled_projection(enabled: bool = True) -> Iterator[None]:
    """Within the block (this thread or task), :func:`prepare_splats` runs the projection
    (covariances + EWA) as one ``torch.compile`` graph (``fullgraph``: no break, no host sync):
    a few fused kernels instead of ~170 small ones. Same results within float rounding. The
    caller checks that compiling works here (``scene.rendering.compile_problem``)."""
    token = _COMPILED_PROJECTION.set(enabled)
    try:
        yield
    finally:
        _COMPILED_PROJECTION.reset(token)


def _project(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d) -> dict:
    """:func:`projection.project_gaussians` of the splats' covariances (arguments as there)."""
    covars = quat_scale_to_covar(quats, scales)
    return project_gaussians(means, covars, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d)


@functools.cache
def _compiled_project():
    return torch.compile(_project, fullgraph=True)


def prepare_splats(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    near_plane, far_plane, sh_degree, backgrounds, render_mode, eps2d,
) -> SplatInputs:
    """Project the splats and build their per-camera features (arguments as ``rasterize_torch``)."""
    C, N = viewmats.shape[0], means.shape[0]
    opac = opacities if opacities.dim() == 2 else opacities.unsqueeze(0).expand(C, N)
    project = _compiled_project() if _COMPILED_PROJECTION.get() else _project
    proj = project(means, quats, scales, opac, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
    if proj["means2d"].requires_grad:
        proj["means2d"].retain_grad()

    want_rgb = render_mode in ("RGB", "RGB+D", "RGB+ED")
    want_depth = render_mode != "RGB"
    feats = []
    rgb = None
    if want_rgb:
        if sh_degree is not None:
            dirs = means.unsqueeze(0) - camera_centers(viewmats).unsqueeze(1)  # (C, N, 3)
            coeffs = colors if colors.dim() == 4 else colors.unsqueeze(0).expand(C, *colors.shape)
            rgb = torch.clamp_min(eval_sh(sh_degree, coeffs, dirs) + 0.5, 0.0)
        else:
            rgb = colors if colors.dim() == 3 else colors.unsqueeze(0).expand(C, *colors.shape)
        feats.append(rgb)
    if want_depth:
        feats.append(proj["depths"].unsqueeze(-1))
    feats = feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)

    bg = None
    if want_rgb and backgrounds is not None:
        bg = backgrounds
        if want_depth:
            bg = torch.cat([bg, torch.zeros_like(bg[:, :1])], dim=-1)
    return SplatInputs(proj=proj, opacities=opac, feats=feats, backgrounds=bg, rgb=rgb)


def finish_render(render: torch.Tensor, alphas: torch.Tensor, render_mode: str) -> torch.Tensor:
    """Turn the accumulated depth channel into expected depth (D / alpha) for the "ED" modes.

    render (C, H, W, D), alphas (C, H, W, 1) -> (C, H, W, D)."""
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp_min(1e-10)], dim=-1)
    return render


def build_meta(backend: str, inputs: SplatInputs, tiles_per_gauss: torch.Tensor, n_isects: int | torch.Tensor,
               width: int, height: int, tile_size: int) -> dict:
    """The meta dict documented in :func:`gaussian_renderer.api.rasterize` (tiles_per_gauss (C, N))."""
    proj = inputs.proj
    return {
        "backend": backend,
        "means2d": proj["means2d"],
        "radii": proj["radii"],
        "radii_xy": proj["radii_xy"],
        "depths": proj["depths"],
        "visible": proj["visible"],
        "conics": proj["conics"],
        "opacities": inputs.opacities,
        "colors": inputs.rgb,
        "tiles_per_gauss": tiles_per_gauss,
        "n_isects": n_isects,
        "tile_size": tile_size,
        "tile_width": (width + tile_size - 1) // tile_size,
        "tile_height": (height + tile_size - 1) // tile_size,
        "width": width,
        "height": height,
        "n_cameras": proj["depths"].shape[0],
    }


def build_plan(means2d, radii_xy, depths, visible, width, height, tile_size,
               budget: int = WORK_BUDGET, block: int = K_BLOCK) -> TilePlan:
    C, N = depths.shape
    with torch.no_grad():
        isects = bin_gaussians(means2d.detach(), radii_xy, depths.detach(), visible, width, height, tile_size)
        chunks = plan_chunks(isects.flat, isects.counts, isects.offsets, C * N, tile_size * tile_size, budget, block)
    return TilePlan(
        n_cameras=C, n_splats=N, width=width, height=height, tile_size=tile_size,
        tiles_x=(width + tile_size - 1) // tile_size, tiles_y=(height + tile_size - 1) // tile_size,
        n_isects=isects.n_isects, tiles_per_gauss=isects.tiles_per_gauss, tile_counts=isects.counts, chunks=chunks,
    )


def rasterize_torch(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    near_plane, far_plane, sh_degree, backgrounds, render_mode, eps2d, tile_size,
    budget: int = WORK_BUDGET, block: int = K_BLOCK,
):
    """Arguments already validated by :func:`gaussian_renderer.api.rasterize`."""
    inputs = prepare_splats(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode, eps2d=eps2d)
    proj = inputs.proj
    plan = build_plan(proj["means2d"], proj["radii_xy"], proj["depths"], proj["visible"], width, height,
                      tile_size, budget, block)
    render, alphas = composite(proj["means2d"], proj["conics"], inputs.opacities, inputs.feats,
                               inputs.backgrounds, plan, block)
    render = finish_render(render, alphas, render_mode)
    meta = build_meta("torch", inputs, plan.tiles_per_gauss, plan.n_isects, width, height, tile_size)
    return render, alphas, meta


# Needs nothing beyond torch: always available, and auto's last resort on every device.
BACKEND = register_backend(Backend(
    name=REFERENCE_BACKEND, rasterize=rasterize_torch, import_error=lambda: None,
    fix="the torch backend needs nothing beyond torch",
    devices=None, dtypes=(torch.float32, torch.float64), auto_rank=100,
))
