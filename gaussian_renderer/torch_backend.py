"""Pure-PyTorch tile rasterizer (any device): projection -> SH -> binning -> compositing."""
from __future__ import annotations

import torch

from .compositing import composite
from .projection import camera_centers, project_gaussians, quat_scale_to_covar
from .sh import eval_sh
from .tiles import TilePlan, bin_gaussians, plan_chunks

# Elements of one (tiles, pixels, K) work tensor; the compositing keeps 3 (forward) or 6 (backward)
# of them alive, i.e. ~48 MB in float32 backward. Tiles with longer lists are split in K-blocks.
WORK_BUDGET = 1 << 19
K_BLOCK = 256


def build_plan(means2d, radii_xy, depths, visible, width, height, tile_size,
               budget: int = WORK_BUDGET, block: int = K_BLOCK) -> TilePlan:
    C, N = depths.shape
    with torch.no_grad():
        isect_flat, counts, offsets, tiles_per_gauss = bin_gaussians(
            means2d.detach(), radii_xy, depths.detach(), visible, width, height, tile_size)
        chunks = plan_chunks(isect_flat, counts, offsets, C * N, tile_size * tile_size, budget, block)
    return TilePlan(
        n_cameras=C, n_splats=N, width=width, height=height, tile_size=tile_size,
        tiles_x=(width + tile_size - 1) // tile_size, tiles_y=(height + tile_size - 1) // tile_size,
        n_isects=int(isect_flat.numel()), tiles_per_gauss=tiles_per_gauss, tile_counts=counts, chunks=chunks,
    )


def rasterize_torch(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    near_plane, far_plane, sh_degree, backgrounds, render_mode, eps2d, tile_size,
    budget: int = WORK_BUDGET, block: int = K_BLOCK,
):
    """Arguments already validated by :func:`gaussian_renderer.api.rasterize`."""
    C, N = viewmats.shape[0], means.shape[0]
    opac = opacities if opacities.dim() == 2 else opacities.unsqueeze(0).expand(C, N)
    covars = quat_scale_to_covar(quats, scales)
    proj = project_gaussians(means, covars, opac, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
    means2d, conics, depths = proj["means2d"], proj["conics"], proj["depths"]
    if means2d.requires_grad:
        means2d.retain_grad()

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
        feats.append(depths.unsqueeze(-1))
    feats = feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)

    bg = None
    if want_rgb and backgrounds is not None:
        bg = backgrounds
        if want_depth:
            bg = torch.cat([bg, torch.zeros_like(bg[:, :1])], dim=-1)

    plan = build_plan(means2d, proj["radii_xy"], depths, proj["visible"], width, height, tile_size, budget, block)
    render, alphas = composite(means2d, conics, opac, feats, bg, plan, block)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp_min(1e-10)], dim=-1)

    meta = {
        "backend": "torch",
        "means2d": means2d,
        "radii": proj["radii"],
        "radii_xy": proj["radii_xy"],
        "depths": depths,
        "visible": proj["visible"],
        "conics": conics,
        "opacities": opac,
        "colors": rgb,
        "tiles_per_gauss": plan.tiles_per_gauss,
        "n_isects": plan.n_isects,
        "tile_size": tile_size,
        "tile_width": plan.tiles_x,
        "tile_height": plan.tiles_y,
        "width": width,
        "height": height,
        "n_cameras": C,
    }
    return render, alphas, meta
