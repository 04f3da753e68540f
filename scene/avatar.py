"""The avatar: FLAME-bound splats with a colour component and an opacity component.

Given a posed FLAME mesh, the frame's expression/jaw and a camera, :meth:`GaussianAvatar.splats`
produces the world-space splat attributes the rasterizer takes. Components follow docs/DESIGN.md
section 3 and each can be switched off (``ModelConfig``) so that GaussianAvatars and the paper's
ablations run from the same code:

- colour (:mod:`scene.color`): triplane features at the splat's canonical position + view
  direction (in the canonical frame) -> MLP; or, without a colour component, per-splat SH (GA);
- opacity (:mod:`scene.opacity`): canonical logit + feature-line offset for the frame's expression
  and jaw; or, without an opacity component, static.

Both components have one interface: ``param_groups(optim)`` (their Adam groups),
``checkpoint_entries()`` / ``load_checkpoint_entries(entries)`` (their checkpoint files); the
avatar lists them in :meth:`GaussianAvatar.components`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from scene.binding import local_to_world, triangle_frames
from scene.color import TriplaneColor
from scene.gaussian_model import BoundGaussians
from scene.opacity import FeatureLineOpacity
from scene.triplane import canonical_view_dirs

if TYPE_CHECKING:
    from scene.config import OptimConfig


@dataclass
class ModelConfig:
    """What the avatar is made of. Every paper component can be switched off (ablations, GA)."""

    n_shape: int = 300
    n_expr: int = 100
    add_teeth: bool = True
    # Splats per triangle at the start: 1 is GA's (one at each centroid, then densification);
    # about 10 starts FLAME at a real subject's ~100k splats (speed measurements).
    init_splats_per_triangle: int = 1
    # Colour: triplane + MLP decoder (paper) or per-splat spherical harmonics (GA).
    use_triplane: bool = True
    triplane_resolution: int = 128
    triplane_channels: list = field(default_factory=lambda: [32, 16, 16])
    view_pe_freqs: int = 4
    color_hidden: int = 128
    sh_degree: int = 3  # used only when use_triplane is false
    # Expression-dependent opacity: 1D feature-line blendshapes + MLP (paper) or static (GA).
    use_feature_lines: bool = True
    n_expr_bases: int = 80
    n_jaw_bases: int = 16
    line_resolution: int = 64
    line_channels: int = 32
    opacity_hidden: int = 128
    opacity_hidden_layers: int = 2  # the paper's 192 -> 128 -> 128 -> 1
    # The canonical head box is the canonical mesh's bounding box grown by this fraction on every
    # side: the triplane's, and the feature lines' (feature_line_box "head", the official code's:
    # hair, ears and neck included). "face" bounds the lines by the face regions' box instead.
    box_padding: float = 0.1
    feature_line_box: str = "head"
    face_box_regions: list = field(default_factory=lambda: ["face", "eye_region", "lips", "teeth"])
    # Jaw-basis blend weights: "paper" (1 - d_k normalised; nearly uniform for real jaw angles) or
    # "idw" (inverse-distance weighting d_k^-power normalised: sharper; scene/jaw_bases.py).
    jaw_weighting: str = "paper"
    jaw_idw_power: float = 2.0


def padded_box(points: torch.Tensor, padding: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-aligned box of ``points`` (P, 3) grown by ``padding`` x its size on every side."""
    lo, hi = points.min(0).values, points.max(0).values
    grow = (hi - lo) * padding
    return lo - grow, hi + grow


class GaussianAvatar(torch.nn.Module):
    """FLAME-bound Gaussian head avatar.

    Args:
        cfg: model configuration.
        faces: (F, 3) mesh triangles (FLAME with teeth).
        canonical_vertices: (V, 3) neutral mesh of the subject (shape + static offset).
        face_vertex_mask: (V,) bool, the face region's vertices: they bound the feature lines when
            ``cfg.feature_line_box`` is "face" (the default "head" box spans every vertex).
        jaw_bases: (K, 4) wxyz jaw-rotation bases (feature lines only), or None.
    """

    def __init__(self, cfg: ModelConfig, faces: torch.Tensor, canonical_vertices: torch.Tensor,
                 face_vertex_mask: torch.Tensor | None = None, jaw_bases: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("faces", faces.long().clone())
        self.register_buffer("canonical_vertices", canonical_vertices.float().clone())
        rot, scale, origin = triangle_frames(self.canonical_vertices, self.faces)
        self.register_buffer("canonical_rot", rot)
        self.register_buffer("canonical_scale", scale)
        self.register_buffer("canonical_origin", origin)
        self.gaussians = BoundGaussians.spread_over_triangles(self.canonical_vertices, self.faces,
                                                              cfg.init_splats_per_triangle,
                                                              None if cfg.use_triplane else cfg.sh_degree)

        head_lo, head_hi = padded_box(self.canonical_vertices, cfg.box_padding)
        self.register_buffer("head_box", torch.stack([head_lo, head_hi]))
        self.color = TriplaneColor(cfg, head_lo, head_hi) if cfg.use_triplane else None

        self.opacity = None
        if cfg.use_feature_lines:
            if jaw_bases is None:
                raise ValueError("feature lines need jaw bases")
            if cfg.feature_line_box == "head":
                # The whole head, hair, ears and neck (the official code's box): every splat can
                # change opacity with expression.
                box_lo, box_hi = head_lo, head_hi
            else:
                if face_vertex_mask is None or not face_vertex_mask.any():
                    raise ValueError("model.feature_line_box 'face' needs the FLAME masks' face region")
                box_lo, box_hi = padded_box(self.canonical_vertices[face_vertex_mask], cfg.box_padding)
            self.opacity = FeatureLineOpacity(cfg, box_lo, box_hi, jaw_bases)

    def components(self) -> dict:
        """The avatar's components by role ("color", "opacity"), those it has."""
        return {name: c for name, c in (("color", self.color), ("opacity", self.opacity)) if c is not None}

    # -- geometry -------------------------------------------------------------------------------

    def canonical_splat_positions(self) -> torch.Tensor:
        """(N, 3) splat centres on the canonical mesh (where triplane and lines are looked up)."""
        g = self.gaussians
        means, _, _ = local_to_world(self.canonical_rot, self.canonical_scale, self.canonical_origin,
                                     g.binding, g.params["xyz"], g.params["rotation"], g.params["log_scale"])
        return means

    def canonical_world_scales(self) -> torch.Tensor:
        """(N, 3) splat scales in world units on the canonical mesh (for densification)."""
        g = self.gaussians
        return self.canonical_scale[g.binding, None] * torch.exp(g.params["log_scale"])

    # -- appearance -----------------------------------------------------------------------------

    def splats(self, vertices: torch.Tensor, camera_center: torch.Tensor, expr: torch.Tensor,
               jaw_pose: torch.Tensor, use_feature_lines: bool = True) -> dict:
        """World-space splats of one frame.

        Args:
            vertices: (V, 3) posed mesh; camera_center: (3,) world position of the camera.
            expr: (n_expr,) expression coefficients; jaw_pose: (3,) axis-angle.
            use_feature_lines: False during the warm-up (offsets are then zero).
        Returns:
            dict with means (N,3), quats (N,4), scales (N,3), opacities (N,), and either
            colors (N,3) or sh (N,K,3); plus delta (N,) opacity offsets (zeros when off).
        """
        g = self.gaussians
        rot, scale, origin = triangle_frames(vertices, self.faces)
        means, quats, scales = local_to_world(rot, scale, origin, g.binding, g.params["xyz"],
                                              g.params["rotation"], g.params["log_scale"])
        out = {"means": means, "quats": quats, "scales": scales}
        lines_on = self.opacity is not None and use_feature_lines
        need_canonical = self.color is not None or lines_on
        canonical_means = self.canonical_splat_positions() if need_canonical else None

        if self.color is not None:
            view = torch.nn.functional.normalize(means.detach() - camera_center, dim=-1)
            view_c = canonical_view_dirs(view, self.canonical_rot[g.binding], rot[g.binding])
            out["colors"] = self.color(canonical_means, view_c)
        else:
            out["sh"] = g.sh

        logit = g.params["opacity"]
        if lines_on:
            delta = self.opacity(canonical_means, expr, jaw_pose)
        else:
            delta = torch.zeros_like(logit)
        out["delta"] = delta
        out["opacities"] = torch.sigmoid(logit + delta)
        return out

    # -- parameters -----------------------------------------------------------------------------

    def network_param_groups(self, optim: OptimConfig) -> list[dict]:
        """Adam parameter groups of the components (the splats' own optimisers are
        :mod:`scene.optimizer_ops`')."""
        return [group for component in self.components().values() for group in component.param_groups(optim)]
