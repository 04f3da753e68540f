"""Render an avatar for one camera and one set of FLAME vertices (train, eval and render.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian_renderer import rasterize
from scene.avatar import GaussianAvatar


@dataclass
class RenderResult:
    image: torch.Tensor  # (H, W, 3) composited over the background
    alpha: torch.Tensor  # (H, W, 1)
    meta: dict  # rasterizer meta: means2d (1, N, 2) with retained grad, radii (1, N), ...
    splats: dict  # the world-space splats and opacity offsets (see GaussianAvatar.splats)


def render_avatar(
    avatar: GaussianAvatar,
    vertices: torch.Tensor,
    expr: torch.Tensor,
    jaw_pose: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor,
    backend: str = "auto",
    use_feature_lines: bool = True,
    sh_degree: int | None = None,
) -> RenderResult:
    """Render the avatar posed by ``vertices`` (V, 3) from one camera.

    Args:
        expr: (n_expr,) and jaw_pose: (3,) of the frame (drive the opacity offsets).
        viewmat: (4, 4) world-to-camera (OpenCV); K: (3, 3) pixel intrinsics.
        background: (3,) colour.
        sh_degree: active SH degree for per-splat colour (GA's progressive schedule); None = all.
    """
    camera_center = torch.linalg.inv(viewmat)[:3, 3]
    splats = avatar.splats(vertices, camera_center, expr, jaw_pose, use_feature_lines)
    if "colors" in splats:
        colors, degree = splats["colors"], None
    else:
        colors = splats["sh"]
        degree = avatar.gaussians.sh_degree if sh_degree is None else min(sh_degree, avatar.gaussians.sh_degree)
    # Tiles of 8 px waste fewer pixel-splat pairs on the CPU for millimetre-sized splats (the
    # images are identical for any tile size); CUDA kernels (gsplat) are tuned for 16.
    tile_size = 16 if vertices.is_cuda else 8
    rgb, alpha, meta = rasterize(
        splats["means"], splats["quats"], splats["scales"], splats["opacities"], colors,
        viewmat[None], K[None], width, height,
        sh_degree=degree, backgrounds=background[None], backend=backend, tile_size=tile_size,
    )
    return RenderResult(rgb[0], alpha[0], meta, splats)
