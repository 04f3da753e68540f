"""The ``gha`` geometry: GHA's canonical neutral Gaussians moved by expression and pose MLPs
(paper section 4.1, eqs. 3, 5, 6, 7), driven by the frame's FLAME parameters.

Per splat (stored among the splats, so densification carries them with their Adam moments):
X0 = ``xyz`` (canonical world position), Q0 = ``rotation`` (canonical world rotation, wxyz),
S0 = ``log_scale`` (world log-scale), A0 = ``opacity`` (logit), F0 = ``gha_feature`` (F,).
``binding`` is the nearest canonical triangle at initialisation, inherited by children: the splats
are not bound to it (:attr:`binds_splats` False: densification prunes as plain 3DGS).

For a frame with expression code theta = (expr, jaw_pose) and head pose beta = (rotation,
translation, neck_pose):

    X' = X0 + l_exp f_def_exp(X0, theta) + l_pose f_def_pose(X0, beta)                   (3)
    {Q', S', A'} = {Q0, S0, A0} + l_exp f_att_exp(F0, theta) + l_pose f_att_pose(F0, beta) (5)
    X = R (X' - J0) + J0 + t,  Q = q(R) Q',  S = exp(S'),  A = A'                         (6, 7)

with l_exp = lambda_exp(X0) from the distance to the canonical landmarks (:mod:`.landmarks`),
l_pose = 1 - l_exp, R the FLAME global rotation about its root joint J0 (rest pose of the canonical
mesh) and t the FLAME translation: the posed FLAME mesh's rigid head motion. The neck pose enters as
an input of the pose MLPs only (as GHA's own head pose drives the neck and shoulders there), not in
the rigid transform. The opacity shift A' - A0 reaches the avatar's opacity through the ``gha``
opacity component (:class:`GHASplats.opacity_shift`), since the avatar's opacity is
sigmoid(logit + offset).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from flame_model import axis_angle_to_matrix
from scene.methods.gha.landmarks import canonical_landmarks, expression_weight, head_length, landmark_distance
from scene.methods.gha.networks import ConditionedMLP, fourier_features, fourier_width
from scene.model.components import (BuildContext, GeometryComponent, PluginContractError, SplatAttribute,
                                    SplatGeometry)
from scene.model.gaussian_model import BoundGaussians, points_in_triangles
from scene.model.registry import GEOMETRY, ComponentConfig
from utils.config import check_positive, check_range
from utils.errors import InputFileError
from utils.rotations import matrix_to_quat, quat_multiply, quat_normalize

__all__ = ["GHAGeometry", "GHASplats", "frame_codes", "head_transform", "posed_by_head", "mesh_rotation",
           "surface_splats", "FEATURE"]

#: The per-splat feature F0's name among the splats (PLY columns gha_feature_0..F-1).
FEATURE = "gha_feature"
#: Widths of the expression code (after the FLAME expression) and of the head-pose code.
JAW_WIDTH, POSE_WIDTH = 3, 9


class GHASplats(SplatGeometry):
    """A frame's splats from the ``gha`` geometry, with what GHA's colour and opacity read:
    ``expression_weight`` (N,) lambda_exp of every splat, ``opacity_shift`` (N,) the logit shift
    of eq. 5."""

    def __init__(self, *args, expression_weight: torch.Tensor, opacity_shift: torch.Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self.expression_weight = expression_weight
        self.opacity_shift = opacity_shift


def frame_codes(motion: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """GHA's conditions from a frame's FLAME parameters: the expression code theta
    (n_expr + 3,) = (expr, jaw_pose) and the head pose beta (9,) = (rotation, translation, neck_pose)."""
    theta = torch.cat([motion["expr"].reshape(-1), motion["jaw_pose"].reshape(-1)])
    beta = torch.cat([motion["rotation"].reshape(-1), motion["translation"].reshape(-1),
                      motion["neck_pose"].reshape(-1)])
    return theta, beta


def head_transform(rotation: torch.Tensor, translation: torch.Tensor, root: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rigid head motion of FLAME's global pose: (R (3, 3), offset (3,)) with world
    x = R x' + offset = R (x' - root) + root + translation, for axis-angle ``rotation`` (3,)
    about the ``root`` joint (3,)."""
    R = axis_angle_to_matrix(rotation.reshape(1, 3))[0].to(root.dtype)
    return R, root + translation.reshape(3).to(root.dtype) - R @ root


def posed_by_head(x: torch.Tensor, rotation: torch.Tensor, motion: dict, root: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canonical splats moved rigidly with the head: positions ``x`` (N, 3) and wxyz rotations
    ``rotation`` (N, 4) -> world (means (N, 3), quats (N, 4), R (3, 3)) under the frame's FLAME
    global ``motion["rotation"]`` about ``root`` (3,) and ``motion["translation"]`` (:func:`head_transform`)."""
    R, offset = head_transform(motion["rotation"], motion["translation"], root.to(x.dtype))
    return x @ R.T + offset, quat_multiply(matrix_to_quat(R).expand_as(rotation), rotation), R


def mesh_rotation(canonical: torch.Tensor, posed: torch.Tensor) -> torch.Tensor:
    """(3, 3) the rotation best taking the ``canonical`` mesh (V, 3) to the ``posed`` one (V, 3),
    both about their centroids (Kabsch): the head's global rotation when the neck is still."""
    a = canonical - canonical.mean(0)
    b = posed - posed.mean(0)
    u, _, vt = torch.linalg.svd(b.T.double() @ a.double())
    d = torch.sign(torch.det(u @ vt))
    return (u @ torch.diag(torch.stack([d.new_ones(()), d.new_ones(()), d])) @ vt).to(posed.dtype)


def surface_splats(vertices: torch.Tensor, faces: torch.Tensor, n: int, seed: int) -> BoundGaussians:
    """``n`` free splats uniform by area on the mesh ``vertices`` (V, 3), ``faces`` (F, 3): 3DGS's
    start (identity rotation, opacity 0.1, isotropic scale of the sampling's mean spacing
    sqrt(area / n)) in world units, ``binding`` the triangle each was sampled on."""
    points, tri, area = sample_surface(vertices, faces, n, seed)
    splats = BoundGaussians(tri)
    with torch.no_grad():
        splats.params["xyz"].copy_(points)
        splats.params["log_scale"].fill_(0.5 * math.log(area / n))
    return splats


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, n: int, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``n`` points uniform by area on the mesh: (points (n, 3), their triangles (n,), total area)."""
    g = torch.Generator().manual_seed(seed)
    corners = vertices[faces].double().cpu()  # (F, 3, 3)
    area = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=1)
    tri = torch.multinomial(area / area.sum(), n, replacement=True, generator=g)
    points = points_in_triangles(corners[tri], torch.rand(n, 2, generator=g, dtype=torch.float64))
    return points.to(vertices), tri.to(faces.device), float(area.sum())


def positional_features(unit_positions: torch.Tensor, width: int, seed: int) -> torch.Tensor:
    """(N, width) random Fourier features of positions in head units (N, 3): sin and cos of random
    projections of up to about 8 cycles per head length. They stand in for the per-vertex features
    GHA takes from its SDF network (a smooth function of position) at initialisation."""
    g = torch.Generator().manual_seed(seed)
    half = (width + 1) // 2
    B = (torch.randn(half, 3, generator=g, dtype=torch.float64) * 4.0).to(unit_positions)
    angles = 2 * math.pi * unit_positions @ B.T
    return torch.cat([torch.sin(angles), torch.cos(angles)], 1)[:, :width].contiguous()


@GEOMETRY.register("gha")
class GHAGeometry(GeometryComponent):
    """GHA's canonical Gaussians and dynamic generator (position and attribute MLPs)."""

    binds_splats = False

    @dataclass
    class Config(ComponentConfig):
        type: str = "gha"
        # Splats sampled uniformly by area on the canonical FLAME surface (GHA: the vertices of its
        # DMTet mesh, which is not built here).
        init_points: int = 50000
        feature_dim: int = 128           # F0's width (paper: 128)
        feature_lr: float = 1.0e-5       # paper: 1e-5 for X0 and F0
        mlp_lr: float = 1.0e-4           # paper: 1e-4 for the deformation and attribute MLPs
        hidden: int = 256                # width and hidden layers of the four MLPs (not in the paper)
        hidden_layers: int = 3
        position_frequencies: int = 6    # Fourier frequencies of X0 (head units) for f_def
        t1: float = 0.15                 # paper: lambda_exp = 1 below t1, 0 beyond t2, in head lengths
        t2: float = 0.25
        # The canonical landmarks P0: vertices of these FLAME regions, thinned to n_landmarks.
        landmark_regions: list = field(default_factory=lambda: ["eye_region", "nose", "lips"])
        n_landmarks: int = 68
        seed: int = 0                    # of the surface sampling and F0's initial features

        def masks_needed(self) -> list[str]:
            return ["the gha geometry's landmarks (model.geometry.landmark_regions)"]

        def validate(self, model, where: str) -> None:
            for key in ("init_points", "feature_dim", "hidden", "n_landmarks"):
                check_range(f"{where}.{key}", getattr(self, key), 1)
            check_range(f"{where}.hidden_layers", self.hidden_layers, 0)
            check_range(f"{where}.position_frequencies", self.position_frequencies, 0)
            check_positive(f"{where}.feature_lr", self.feature_lr)
            check_positive(f"{where}.mlp_lr", self.mlp_lr)
            check_range(f"{where}.t1", self.t1, 0.0)
            if not self.t2 > self.t1:
                raise InputFileError(f"{where}.t2 must be larger than {where}.t1 ({self.t1}), got {self.t2}")
            if not (isinstance(self.landmark_regions, list) and self.landmark_regions
                    and all(isinstance(r, str) for r in self.landmark_regions)):
                raise InputFileError(f"{where}.landmark_regions must be a non-empty list of FLAME region names, "
                                     f"got {self.landmark_regions!r}")

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        if ctx.rig is None:
            raise PluginContractError("model.geometry 'gha' needs FLAME's rig (BuildContext.rig) for the root joint")
        canonical = ctx.canonical_vertices.float()
        self.register_buffer("faces", ctx.faces.long().clone())
        self.register_buffer("canonical_vertices", canonical.clone())
        self.register_buffer("landmarks", canonical_landmarks(canonical, ctx.vertex_masks, list(cfg.landmark_regions),
                                                              cfg.n_landmarks, "model.geometry.landmark_regions"))
        self.register_buffer("root", ctx.rig.joint_regressor[0].to(canonical) @ canonical)
        lo, hi = canonical.min(0).values, canonical.max(0).values
        self.register_buffer("centre", 0.5 * (lo + hi))
        self.register_buffer("head_length", torch.tensor(head_length(canonical)))
        theta_width = ctx.n_expr + JAW_WIDTH
        x_width = fourier_width(3, cfg.position_frequencies)
        mlp = lambda d_in, d_frame, d_out: ConditionedMLP(d_in, d_frame, cfg.hidden, cfg.hidden_layers, d_out)  # noqa: E731
        # Deformation MLPs: displacement in head lengths; attribute MLPs: shifts of the rotation (4),
        # log-scale (3) and opacity logit (1). Zero outputs at first: the neutral Gaussians.
        self.mlps = torch.nn.ModuleDict({
            "def_exp": mlp(x_width, theta_width, 3), "def_pose": mlp(x_width, POSE_WIDTH, 3),
            "att_exp": mlp(cfg.feature_dim, theta_width, 8), "att_pose": mlp(cfg.feature_dim, POSE_WIDTH, 8),
        })

    # -- splats ---------------------------------------------------------------------------------

    def unit_positions(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N, 3) positions in head lengths about the canonical box's centre (the MLPs' input)."""
        return (xyz - self.centre) / self.head_length

    def initial_splats(self) -> BoundGaussians:
        """``init_points`` splats on the canonical surface: 3DGS's start (identity rotation, opacity
        0.1, isotropic scale of the sampling's mean spacing sqrt(area / N)), F0 = positional
        features of X0, binding = the triangle each was sampled on."""
        c = self.cfg
        splats = surface_splats(self.canonical_vertices, self.faces, c.init_points, c.seed)
        splats.add_attribute(FEATURE, SplatAttribute((c.feature_dim,), lr=c.feature_lr))
        with torch.no_grad():
            points = splats.params["xyz"]
            splats.params[FEATURE].copy_(positional_features(self.unit_positions(points), c.feature_dim, c.seed))
        return splats.to(self.faces.device)

    def expression_weights(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N,) lambda_exp of splats at canonical ``xyz`` (N, 3): a fixed function of where a splat is
        (no gradient reaches the positions through it)."""
        distance = landmark_distance(xyz.detach(), self.landmarks.to(xyz.dtype)) / self.head_length.to(xyz.dtype)
        return expression_weight(distance, self.cfg.t1, self.cfg.t2)

    def forward(self, vertices: torch.Tensor, gaussians: BoundGaussians, camera_center: torch.Tensor,
                motion: dict) -> GHASplats:
        """The frame's splats from the neutral ones and ``motion`` (the posed ``vertices`` are not read)."""
        p = gaussians.params
        x0, f0 = p["xyz"], p[FEATURE]
        lam = self.expression_weights(x0)[:, None]  # (N, 1)
        theta, beta = frame_codes(motion)
        code = fourier_features(self.unit_positions(x0), self.cfg.position_frequencies)
        m = self.mlps
        displacement = lam * m["def_exp"](code, theta) + (1 - lam) * m["def_pose"](code, beta)
        x_moved = x0 + displacement * self.head_length.to(x0.dtype)
        shift = lam * m["att_exp"](f0, theta) + (1 - lam) * m["att_pose"](f0, beta)  # (N, 8)
        rotation = quat_normalize(p["rotation"] + shift[:, :4])
        log_scale = p["log_scale"] + shift[:, 4:7]
        means, quats, R = posed_by_head(x_moved, rotation, motion, self.root)

        def canonical_view() -> torch.Tensor:
            return torch.nn.functional.normalize(means.detach() - camera_center, dim=-1) @ R.detach()

        return GHASplats(means, quats, torch.exp(log_scale), p, gaussians.binding, lambda: x0, canonical_view,
                         expression_weight=lam[:, 0], opacity_shift=shift[:, 7])

    def canonical_positions(self, gaussians: BoundGaussians) -> torch.Tensor:
        return gaussians.params["xyz"]

    def canonical_world_scales(self, gaussians: BoundGaussians) -> torch.Tensor:
        return torch.exp(gaussians.params["log_scale"])

    def canonical_to_world_rotations(self, vertices: torch.Tensor, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, 3, 3) the posed mesh's rotation from the canonical one (Kabsch fit over all vertices:
        the head's global rotation when the neck is still), the same for every splat."""
        return mesh_rotation(self.canonical_vertices, vertices).expand(len(gaussians), 3, 3)

    # -- training and files ---------------------------------------------------------------------

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.mlps.parameters()), "lr": self.cfg.mlp_lr, "name": "gha_deformation"}]

    def checkpoint_entries(self) -> dict:
        return {"gha_deformation": self.mlps.state_dict()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        self.mlps.load_state_dict({k: v.float() for k, v in entries["gha_deformation"].items()})
