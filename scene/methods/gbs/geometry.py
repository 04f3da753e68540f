"""The ``gaussian_blendshapes`` geometry: neutral Gaussians, one Gaussian blendshape per FLAME
expression component, a mouth-interior set, posed by FLAME's linear blend skinning (GBS-style,
Ma et al. SIGGRAPH 2024; docs/METHODS_GBS.md).

The splats live in canonical world space (``binds_splats`` False): ``xyz`` is the neutral centre
B0, ``rotation`` the neutral world rotation (wxyz), ``log_scale`` the neutral world log-scale;
``binding`` is the triangle nearest to the splat when it was made (children inherit it). Per splat
and blendshape k the deltas ``bs_rotation`` (N, K, 4) and ``bs_scale`` (N, K, 3) start at zero;
the position delta of blendshape k is FLAME's expression displacement ``expr_dirs[..., k]`` at the
splat's nearest surface point plus a learnt residual ``bs_xyz`` (N, K, 3), which starts at zero
(the semantic initialisation) and is pulled towards zero by the ``semantic`` loss (the semantic
consistency: blendshape k means what FLAME's component k means).

A frame with expression psi and pose theta:

    x    = xyz + sum_k psi_k (d_k(p) + bs_xyz_k)         p: the nearest point on the bound triangle
    q    = rotation + sum_k psi_k bs_rotation_k           (normalised)
    s    = exp(log_scale + sum_k psi_k bs_scale_k)
    x'   = sum_j w_j(p) (R_j x + t_j) + translation       FLAME's LBS, joints of the canonical mesh
    q'   = normalize(sum_j w_j(p) q_j) * q                plus the expression's joint offsets

with w(p) the barycentric blend of the triangle's vertex skinning weights. No pose correctives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flame_model import JOINT_NAMES, MOTION_KEYS
from scene.methods.gbs.blendshapes import blend, leading_coefficients
from scene.methods.gbs.mouth import lower_teeth_faces, mouth_points, nearest_faces
from scene.methods.gbs.nearest_point import nearest_barycentric
from scene.methods.gbs.skinning import blend_joint_rotations, frame_pose, joint_transforms, skin_means
from scene.model.binding import triangle_frames
from scene.model.components import (BuildContext, GeometryComponent, LossContext, PluginContractError,
                                    SplatAttribute, SplatGeometry)
from scene.model.gaussian_model import BoundGaussians, fold_into_triangle
from scene.model.registry import GEOMETRY, ComponentConfig
from utils.config import check_positive, check_range
from utils.errors import InputFileError
from utils.rotations import matrix_to_quat, quat_multiply, quat_normalize, quat_to_matrix

__all__ = ["GaussianBlendshapesGeometry"]


@GEOMETRY.register("gaussian_blendshapes")
class GaussianBlendshapesGeometry(GeometryComponent):
    """Neutral Gaussians + expression blendshapes + mouth set, skinned by FLAME's LBS."""

    binds_splats = False

    @dataclass
    class Config(ComponentConfig):
        type: str = "gaussian_blendshapes"
        # K: one Gaussian blendshape per FLAME expression component, the first K (<= model.n_expr).
        n_blendshapes: int = 50
        # The neutral set B0 starts with this many splats per canonical triangle (1: at centroids).
        init_splats_per_triangle: int = 1
        # The mouth-interior set Bm: splats inside the lower teeth's box, skinned to the jaw
        # (needs model.add_teeth; 0: none).
        mouth_splats: int = 2000
        # Expression components beyond K move the splats by FLAME's displacement at their nearest
        # point (no learnt delta), so that they follow the whole tracked expression; false: only the
        # K blendshapes move them (the joints follow the whole expression either way).
        follow_remaining_expression: bool = True
        # Adam rates of the deltas: position residual in world units (metres per unit coefficient)
        # per step; rotation (quaternion) and log-scale as 3DGS's rates for the neutral ones.
        delta_position_lr: float = 1.0e-5
        delta_rotation_lr: float = 1.0e-3
        delta_scale_lr: float = 5.0e-3
        # Semantic consistency: lambda x mean over splats of sum over blendshapes of
        # |residual / l|^2, l the canonical mesh's mean triangle size.
        lambda_semantic: float = 0.1

        def validate(self, model, where: str) -> None:
            check_range(f"{where}.n_blendshapes", self.n_blendshapes, 1)
            if self.n_blendshapes > model.n_expr:
                raise InputFileError(f"config key '{where}.n_blendshapes' cannot exceed model.n_expr "
                                     f"({model.n_expr}), got {self.n_blendshapes}")
            check_range(f"{where}.init_splats_per_triangle", self.init_splats_per_triangle, 1)
            check_range(f"{where}.mouth_splats", self.mouth_splats, 0)
            if self.mouth_splats and not model.add_teeth:
                raise InputFileError(f"config key '{where}.mouth_splats' needs model.add_teeth: the mouth set is "
                                     f"placed by the lower teeth (set {where}.mouth_splats=0 without teeth)")
            for key in ("delta_position_lr", "delta_rotation_lr", "delta_scale_lr"):
                check_positive(f"{where}.{key}", getattr(self, key))
            check_range(f"{where}.lambda_semantic", self.lambda_semantic, 0.0)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        if ctx.rig is None:
            raise PluginContractError("model.geometry 'gaussian_blendshapes' needs FLAME's rig (BuildContext.rig: "
                                      "joint regressor, skinning weights, expression blendshapes)")
        rig = ctx.rig
        self.parents = tuple(int(p) for p in rig.parents)
        self.register_buffer("faces", ctx.faces.long().clone())
        self.register_buffer("canonical_vertices", ctx.canonical_vertices.float().clone())
        self.register_buffer("lbs_weights", rig.lbs_weights.float().clone())
        self.register_buffer("expr_dirs", rig.expr_dirs.float().clone())  # (V, 3, n_expr)
        regressor = rig.joint_regressor.float()
        self.register_buffer("joints", regressor @ self.canonical_vertices)  # (J, 3)
        self.register_buffer("joint_expr_dirs", torch.einsum("jv,vdk->jdk", regressor, self.expr_dirs))
        frames = triangle_frames(self.canonical_vertices, self.faces)
        self.register_buffer("canonical_rot", frames.rotations)
        self.register_buffer("canonical_scale", frames.scales)
        self.register_buffer("canonical_corners", self.canonical_vertices[self.faces])  # (F, 3, 3)
        self.teeth = ctx.vertex_masks.get("teeth")
        if cfg.mouth_splats and (self.teeth is None or not self.teeth.any()):
            raise PluginContractError("model.geometry 'gaussian_blendshapes': mouth_splats > 0 needs FLAME's teeth "
                                      "(model.add_teeth)")

    @property
    def n_blendshapes(self) -> int:
        return self.cfg.n_blendshapes

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        k, c = self.cfg.n_blendshapes, self.cfg
        return {"bs_xyz": SplatAttribute((k, 3), c.delta_position_lr),
                "bs_rotation": SplatAttribute((k, 4), c.delta_rotation_lr),
                "bs_scale": SplatAttribute((k, 3), c.delta_scale_lr)}

    # -- the splats at the start ------------------------------------------------------------------

    def initial_splats(self) -> BoundGaussians:
        """B0 on the canonical surface (at the centroids, or ``init_splats_per_triangle`` uniform
        points per triangle), oriented by their triangle and as wide as it; then the mouth set."""
        per = self.cfg.init_splats_per_triangle
        n_faces = self.faces.shape[0]
        binding = torch.arange(n_faces).repeat_interleave(per)
        if per == 1:
            bary = torch.full((n_faces, 3), 1.0 / 3.0)
        else:
            u = fold_into_triangle(torch.rand(binding.shape[0], 2, generator=torch.Generator().manual_seed(0)))
            bary = torch.cat([1 - u.sum(1, keepdim=True), u], 1)
        xyz = (bary[..., None] * self.canonical_corners.cpu()[binding]).sum(1)
        rotation = matrix_to_quat(self.canonical_rot.cpu()[binding])
        log_scale = torch.log(self.canonical_scale.cpu()[binding] / math.sqrt(per)).clamp_min(-20.0)[:, None].repeat(1, 3)
        if self.cfg.mouth_splats:
            m_xyz, m_binding, m_log_scale = self._mouth_set()
            xyz, binding = torch.cat([xyz, m_xyz]), torch.cat([binding, m_binding])
            rotation = torch.cat([rotation, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(len(m_xyz), 1)])
            log_scale = torch.cat([log_scale, m_log_scale])
        splats = BoundGaussians(binding)
        with torch.no_grad():
            splats.params["xyz"].copy_(xyz)
            splats.params["rotation"].copy_(rotation)
            splats.params["log_scale"].copy_(log_scale)
        return splats.to(self.faces.device)

    def _mouth_set(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M, 3) centres, (M,) bindings and (M, 3) log-scales of the mouth-interior set."""
        lower = lower_teeth_faces(self.faces.cpu(), self.teeth.cpu(), self.lbs_weights.cpu(), JOINT_NAMES.index("jaw"))
        if lower.numel() == 0:
            raise PluginContractError("model.geometry 'gaussian_blendshapes': FLAME has no lower-teeth triangles "
                                      "skinned to the jaw for the mouth set; set mouth_splats: 0")
        corners = self.canonical_corners.cpu()[lower]
        points = mouth_points(corners, self.cfg.mouth_splats)
        binding = lower[nearest_faces(points, corners)]
        scale = self.canonical_scale.cpu()[lower].mean().clamp_min(1e-9)
        return points, binding, torch.log(scale).expand(len(points), 3).clone()

    # -- a frame ----------------------------------------------------------------------------------

    def nearest_points(self, gaussians: BoundGaussians) -> tuple[torch.Tensor, torch.Tensor]:
        """((N, 3) barycentric coordinates, (N, 3) vertex indices): each splat's nearest point on
        its bound canonical triangle, through which it reads FLAME's skinning weights and
        expression displacements."""
        corners = self.canonical_corners[gaussians.binding]
        bary = nearest_barycentric(gaussians.params["xyz"], corners[:, 0], corners[:, 1], corners[:, 2])
        return bary, self.faces[gaussians.binding]

    def skinning_weights(self, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, J) FLAME skinning weights at each splat's nearest canonical surface point."""
        bary, tri = self.nearest_points(gaussians)
        return torch.einsum("nc,ncj->nj", bary, self.lbs_weights[tri])

    def position_deltas(self, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, K, 3) the position delta of every blendshape: FLAME's expression displacement at
        the nearest surface point plus the learnt residual (world units per unit coefficient)."""
        bary, tri = self.nearest_points(gaussians)
        flame = torch.einsum("nc,ncdk->nkd", bary, self.expr_dirs[tri][..., :self.n_blendshapes])
        return flame + gaussians.params["bs_xyz"]

    def _expression(self, motion: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(the whole expression (n_expr,), psi (K,)) of a frame."""
        missing = [k for k in MOTION_KEYS if k not in motion]
        if missing:
            raise ValueError(f"model.geometry 'gaussian_blendshapes' is driven by the frame's FLAME parameters; the "
                             f"motion lacks {missing}")
        expr = leading_coefficients(motion["expr"], self.expr_dirs.shape[-1])
        return expr, expr[:self.n_blendshapes]

    def forward(self, vertices: torch.Tensor, gaussians: BoundGaussians, camera_center: torch.Tensor,
                motion: dict) -> SplatGeometry:
        """The frame's splats from ``motion`` (its expression and pose; ``vertices`` are not read)."""
        g, p = gaussians, gaussians.params
        expr, psi = self._expression(motion)
        bary, tri = self.nearest_points(g)
        # FLAME's displacement at the nearest point, summed over components per vertex first (V, 3).
        used = expr if self.cfg.follow_remaining_expression else psi
        vertex_offsets = torch.einsum("vdk,k->vd", self.expr_dirs[..., :used.shape[0]], used)
        rest_means = p["xyz"] + torch.einsum("nc,ncd->nd", bary, vertex_offsets[tri])
        rest_means = blend(rest_means, p["bs_xyz"], psi)
        rest_quats = quat_normalize(blend(p["rotation"], p["bs_rotation"], psi))
        scales = torch.exp(blend(p["log_scale"], p["bs_scale"], psi))

        weights = torch.einsum("nc,ncj->nj", bary, self.lbs_weights[tri])
        joints = self.joints + torch.einsum("jdk,k->jd", self.joint_expr_dirs, expr)
        transforms = joint_transforms(joints, frame_pose(motion), self.parents)
        means = skin_means(rest_means, weights, transforms) + motion["translation"]
        turn = blend_joint_rotations(weights, transforms)  # (N, 4)
        quats = quat_normalize(quat_multiply(turn, rest_quats))

        def canonical_view() -> torch.Tensor:
            view = torch.nn.functional.normalize(means.detach() - camera_center, dim=-1)
            return torch.einsum("nji,nj->ni", quat_to_matrix(turn.detach()), view)  # R^T v

        return SplatGeometry(means, quats, scales, p, g.binding, lambda: self.canonical_positions(g), canonical_view)

    # -- canonical quantities ---------------------------------------------------------------------

    def canonical_positions(self, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, 3) the neutral centres B0 (the stored ``xyz``)."""
        xyz = gaussians.params["xyz"]
        return xyz if torch.is_grad_enabled() else xyz.detach()

    def canonical_world_scales(self, gaussians: BoundGaussians) -> torch.Tensor:
        return torch.exp(gaussians.params["log_scale"])

    def canonical_to_world_rotations(self, vertices: torch.Tensor, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, 3, 3) per splat, its bound triangle's rotation from the canonical mesh to the mesh
        ``vertices`` (export's SH fit of a colour without SH; the skinning's own rotation needs the
        frame's pose, which this call does not get)."""
        rot = triangle_frames(vertices, self.faces).rotations
        b = gaussians.binding
        return rot[b] @ self.canonical_rot[b].transpose(1, 2)

    def losses(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        if self.cfg.lambda_semantic == 0:
            return {}
        return {"semantic": self.cfg.lambda_semantic * semantic_loss(ctx.params["bs_xyz"], self.mean_triangle_size())}

    def mean_triangle_size(self) -> torch.Tensor:
        """() the canonical mesh's mean triangle size (the unit of the semantic loss)."""
        return self.canonical_scale.mean()


def semantic_loss(residuals: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Mean over splats of sum over blendshapes of |residual / unit|^2: how far the Gaussian
    blendshapes' position deltas are from FLAME's displacements at their nearest points.

    Args:
        residuals: (N, K, 3) the learnt ``bs_xyz``; unit: () a length (the mean triangle size).
    """
    return (residuals / unit).square().sum((1, 2)).mean()
