"""The ``flame_bound`` geometry: splats bound to FLAME triangles (GaussianAvatars; docs/DESIGN.md
section 3.1).

Each splat lives in its triangle's frame (rotation R, scale k, origin T of the posed mesh,
:func:`scene.model.binding.triangle_frames`): world position k R mu' + T, rotation R r', scale
k exp(s'). Its canonical position (the same splat on the neutral mesh) is where canonical-space
fields (triplane, feature lines) are looked up, and view directions reach them rotated through
the triangle (R_c R_d^T v). Its losses are GaussianAvatars' position and scale regularisers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from scene.model.binding import canonical_view_dirs, local_to_world, local_to_world_positions, triangle_frames
from scene.model.components import BuildContext, GeometryComponent, LossContext, SplatGeometry
from scene.model.gaussian_model import BoundGaussians
from scene.model.registry import GEOMETRY, ComponentConfig
from scene.model.version_cache import DerivedTensor
from utils.config import check_range

__all__ = ["FlameBoundGeometry", "splat_regularisers"]


@GEOMETRY.register("flame_bound")
class FlameBoundGeometry(GeometryComponent):
    """Splats bound to the triangles of the posed FLAME mesh."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "flame_bound"
        # Splats per triangle at the start: 1 is GA's (one at each centroid, then densification);
        # about 10 starts FLAME at a real subject's ~100k splats (speed measurements).
        init_splats_per_triangle: int = 1
        # GaussianAvatars' regularisers on the splats the camera sees (docs/DESIGN.md section 4.1):
        # local position beyond threshold_position, local scale beyond threshold_scale.
        lambda_position: float = 0.01
        threshold_position: float = 1.0
        lambda_scale: float = 1.0
        threshold_scale: float = 0.6

        def validate(self, model, where: str) -> None:
            check_range(f"{where}.init_splats_per_triangle", self.init_splats_per_triangle, 1)
            for key in ("lambda_position", "threshold_position", "lambda_scale", "threshold_scale"):
                check_range(f"{where}.{key}", getattr(self, key), 0.0)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        self.register_buffer("faces", ctx.faces.long().clone())
        self.register_buffer("canonical_vertices", ctx.canonical_vertices.float().clone())
        rot, scale, origin = triangle_frames(self.canonical_vertices, self.faces)
        self.register_buffer("canonical_rot", rot)
        self.register_buffer("canonical_scale", scale)
        self.register_buffer("canonical_origin", origin)
        self._canonical_means = DerivedTensor()  # canonical_positions() without autograd

    def initial_splats(self) -> BoundGaussians:
        return BoundGaussians.spread_over_triangles(self.canonical_vertices, self.faces,
                                                    self.cfg.init_splats_per_triangle)

    def canonical_positions(self, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, 3) splat centres on the canonical mesh: k_c R_c mu' + T_c of the canonical frames.

        They depend on the splats' local positions and binding alone, so without autograd
        (rendering, evaluation) they are computed once per version of those tensors and of the
        canonical frames (:class:`DerivedTensor`: an optimiser step, densification or loading
        makes a new version) and every later frame reuses them; with autograd (training) they are
        computed each call, so that gradients reach the positions.
        """
        g = gaussians
        xyz = g.params["xyz"]

        def compute() -> torch.Tensor:
            return local_to_world_positions(self.canonical_rot, self.canonical_scale, self.canonical_origin,
                                            g.binding, xyz)

        if torch.is_grad_enabled() and xyz.requires_grad:
            return compute()
        sources = (xyz, g.binding, self.canonical_rot, self.canonical_scale, self.canonical_origin)
        return self._canonical_means.get(sources, compute)

    def canonical_world_scales(self, gaussians: BoundGaussians) -> torch.Tensor:
        return self.canonical_scale[gaussians.binding, None] * torch.exp(gaussians.params["log_scale"])

    def forward(self, vertices: torch.Tensor, gaussians: BoundGaussians, camera_center: torch.Tensor,
                motion: dict) -> SplatGeometry:
        """The splats posed by ``vertices`` (V, 3) seen from ``camera_center`` (3,) (the mesh says
        everything: ``motion`` is not read)."""
        g = gaussians
        rot, scale, origin = triangle_frames(vertices, self.faces)
        means, quats, scales = local_to_world(rot, scale, origin, g.binding, g.params["xyz"],
                                              g.params["rotation"], g.params["log_scale"])

        def canonical_view() -> torch.Tensor:
            view = torch.nn.functional.normalize(means.detach() - camera_center, dim=-1)
            return canonical_view_dirs(view, self.canonical_rot[g.binding], rot[g.binding])

        return SplatGeometry(means, quats, scales, g.params, g.binding, lambda: self.canonical_positions(g),
                             canonical_view)

    def canonical_to_world_rotations(self, vertices: torch.Tensor, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, 3, 3) per splat, the rotation taking canonical directions to the world directions of
        the mesh posed by ``vertices``: R_d R_c^T, the inverse of the renderer's view mapping."""
        rot = triangle_frames(vertices, self.faces).rotations
        b = gaussians.binding
        return rot[b] @ self.canonical_rot[b].transpose(1, 2)

    def losses(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        c = self.cfg
        position, scale = splat_regularisers(ctx.params, ctx.meta["radii"][0], c.threshold_position, c.threshold_scale)
        return {"position": c.lambda_position * position, "scale": c.lambda_scale * scale}


def splat_regularisers(params: dict, radii: torch.Tensor, threshold_position: float, threshold_scale: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """GaussianAvatars' position and scale regularisers, in triangle-local units, averaged over
    the splats this camera sees (GA's visibility filter, ``radii > 0``).

    Args:
        params: the splats' parameters: xyz (N, 3) local positions, log_scale (N, 3).
        radii: (N,) screen radii from the rasterizer.
    Returns:
        (position, scale): mean of relu(|xyz| - threshold_position) and of
        |relu(exp(log_scale) - threshold_scale)| over the visible splats.
    """
    visible = (radii > 0).to(params["xyz"].dtype)
    n_visible = visible.sum().clamp_min(1.0)
    position = (torch.relu(params["xyz"].norm(dim=1) - threshold_position) * visible).sum() / n_visible
    scale = (torch.relu(torch.exp(params["log_scale"]) - threshold_scale).norm(dim=1) * visible).sum() / n_visible
    return position, scale
