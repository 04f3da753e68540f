"""The ``npga`` geometry: NPGA's canonical Gaussians with per-primitive latent features, deformed by
its dynamics module D = (F, G) (paper section 4.1, eqs. 3-6) and posed by the head's rigid motion;
its regularisers (section 4.3.1, eqs. 11-12) are this component's losses.

Per splat (stored among the splats, so densification carries them with their Adam moments):
mu = ``xyz`` (canonical world position), q = ``rotation`` (wxyz), S = ``log_scale``, alpha =
``opacity`` (logit), f = ``npga_feature`` (F,); the colour component adds the SH coefficients and the
CNN latent h. ``binding`` is the nearest canonical triangle at initialisation, inherited by
children: the splats are free (:attr:`binds_splats` False: densification prunes as plain 3DGS).

For a frame with expression code z = (FLAME expr, jaw pose) (the paper: NPHM's z_exp):

    d_F = F(mu, f; z)                      (3,)  position offset, head lengths      (eq. 4)
    d_G = G(mu, f; z)                      (11 + C,) offsets of every attribute     (eq. 5)
        = (position 3, rotation 4, log-scale 3, opacity logit 1, colour C = SH 3K + latent)
    A_p = A_c + d_F + d_G                  (eq. 6; rotations renormalised)
    x = R (mu + (d_F + d_G,mu) L) + o,  q_world = q(R) q_p                          (rigid head)

with L the head length and (R, o) FLAME's rigid head motion: the neck rotation about the rest neck
joint, then the global rotation about the root joint and the translation (the posed FLAME head's
motion; NPGA's tracked head pose). F and G are MLPs of the Fourier-encoded canonical position and f
(paper: 6 layers of 256), their last layer zero at first. F is NPGA's prior network: a lower rate,
frozen for its first iterations (``prior_frozen_steps``; ``frozen_until`` of its parameter group),
both with weight decay. NPGA distils F from NPHM; here it starts from zero (docs/METHODS_NPGA.md).

Losses (weights ours: the paper gives none): ``lambda_lap_feature`` R_lap(f) and
``lambda_lap_offsets`` R_lap(d_G) on the kNN graph of the canonical centres (:mod:`.knn`),
``lambda_prior_offsets`` mean ||d_F||^2 + ``lambda_detail_offsets`` mean ||d_G||^2 (eq. 12: the
offsets are additive, so their neutral element is 0) and ``lambda_feature`` mean ||f||^2.
The kNN graph is built on the first training frame and rebuilt after every densification step
that cloned, split or pruned splats (the paper's rule; :meth:`splats_changed`: also when as many
were pruned as added, so that the number alone does not tell), and saved with the checkpoint, so a
resumed run uses the same graph as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian_renderer.sh import num_sh_bases
from scene.methods.gha.geometry import (frame_codes, head_transform, mesh_rotation, positional_features,
                                        surface_splats)
from scene.methods.gha.landmarks import head_length
from scene.methods.gha.networks import ConditionedMLP, fourier_features, fourier_width
from scene.methods.npga.knn import knn_graph, laplacian_smoothness
from scene.model.components import (BuildContext, GeometryComponent, LossContext, PluginContractError,
                                    SplatAttribute, SplatGeometry)
from scene.model.gaussian_model import BoundGaussians
from scene.model.registry import GEOMETRY, ComponentConfig
from utils.config import check_positive, check_range
from utils.rotations import matrix_to_quat, quat_multiply, quat_normalize

__all__ = ["NPGAGeometry", "NPGASplats", "FEATURE", "PRIOR_OFFSETS", "DETAIL_OFFSETS", "GEOMETRY_OFFSETS"]

#: The per-splat latent feature f's name among the splats (PLY columns npga_feature_0..F-1).
FEATURE = "npga_feature"
#: Names of the frame's offsets of F and G among the frame's tensors (:attr:`SplatGeometry.extras`).
PRIOR_OFFSETS, DETAIL_OFFSETS = "npga_prior_offsets", "npga_detail_offsets"
#: G's outputs before the colour's: position 3, rotation 4, log-scale 3, opacity logit 1.
GEOMETRY_OFFSETS = 11


class NPGASplats(SplatGeometry):
    """A frame's splats from the ``npga`` geometry, with what NPGA's colour and opacity read:
    ``opacity_shift`` (N,) G's opacity-logit offset, ``color_shift`` (N, 3K + C) G's offsets of the
    SH coefficients (K per channel, coefficient-major) and the latent, ``view_dirs`` (N, 3) unit world
    directions from the camera to each splat; ``extras`` holds the offsets of F (N, 3) and G
    (N, 11 + 3K + C) for the regularisers."""

    def __init__(self, *args, opacity_shift: torch.Tensor, color_shift: torch.Tensor, view_dirs: torch.Tensor,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.opacity_shift, self.color_shift, self.view_dirs = opacity_shift, color_shift, view_dirs


@GEOMETRY.register("npga")
class NPGAGeometry(GeometryComponent):
    """NPGA's canonical Gaussians and dynamics module (F, G), with its regularisers."""

    binds_splats = False

    @dataclass
    class Config(ComponentConfig):
        type: str = "npga"
        # Splats sampled uniformly by area on the canonical FLAME surface (paper: 30k points on the
        # tracked NPHM iso-surface).
        init_points: int = 30000
        feature_dim: int = 8             # paper: f in R^{N x 8}
        feature_lr: float = 1.0e-3       # not in the paper
        # The colour G predicts offsets of: model.color's SH degree and latent channels.
        sh_degree: int = 3
        latent_channels: int = 16
        hidden: int = 256                # paper: 6-layer MLPs of 256 (5 hidden layers + the output)
        hidden_layers: int = 5
        position_frequencies: int = 6    # Fourier frequencies of mu (head units); not in the paper
        prior_lr: float = 4.0e-5         # paper: F at 4e-5
        detail_lr: float = 2.0e-3        # paper: G at 2e-3
        prior_frozen_steps: int = 5000   # paper: F frozen for the first 5000 steps
        weight_decay: float = 0.1        # paper: 0.1 on F and G (decoupled, AdamW's: ours)
        knn: int = 8                     # neighbours in the Laplacian's graph (not in the paper)
        lambda_lap_feature: float = 1.0  # loss weights: not in the paper
        lambda_lap_offsets: float = 1.0
        lambda_prior_offsets: float = 0.1
        lambda_detail_offsets: float = 0.1
        lambda_feature: float = 1.0e-3
        seed: int = 0                    # of the surface sampling and f's initial features

        def validate(self, model, where: str) -> None:
            for key in ("init_points", "feature_dim", "hidden", "knn"):
                check_range(f"{where}.{key}", getattr(self, key), 1)
            check_range(f"{where}.sh_degree", self.sh_degree, 0, 3)
            for key in ("latent_channels", "hidden_layers", "position_frequencies", "prior_frozen_steps"):
                check_range(f"{where}.{key}", getattr(self, key), 0)
            for key in ("feature_lr", "prior_lr", "detail_lr"):
                check_positive(f"{where}.{key}", getattr(self, key))
            for key in ("weight_decay", "lambda_lap_feature", "lambda_lap_offsets", "lambda_prior_offsets",
                        "lambda_detail_offsets", "lambda_feature"):
                check_range(f"{where}.{key}", getattr(self, key), 0.0)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        if ctx.rig is None:
            raise PluginContractError("model.geometry 'npga' needs FLAME's rig (BuildContext.rig) for the root and "
                                      "neck joints")
        canonical = ctx.canonical_vertices.float()
        self.register_buffer("faces", ctx.faces.long().clone())
        self.register_buffer("canonical_vertices", canonical.clone())
        joints = ctx.rig.joint_regressor.to(canonical) @ canonical  # (K, 3): root, neck, jaw, eyes
        self.register_buffer("root", joints[0].clone())
        self.register_buffer("neck", joints[1].clone())
        lo, hi = canonical.min(0).values, canonical.max(0).values
        self.register_buffer("centre", 0.5 * (lo + hi))
        self.register_buffer("head_length", torch.tensor(head_length(canonical)))
        z_width = ctx.n_expr + 3
        splat_width = fourier_width(3, cfg.position_frequencies) + cfg.feature_dim
        self.color_width = 3 * num_sh_bases(cfg.sh_degree) + cfg.latent_channels
        self.mlps = torch.nn.ModuleDict({
            "prior": ConditionedMLP(splat_width, z_width, cfg.hidden, cfg.hidden_layers, 3),
            "detail": ConditionedMLP(splat_width, z_width, cfg.hidden, cfg.hidden_layers,
                                     GEOMETRY_OFFSETS + self.color_width),
        })
        # The kNN graph (N, k) of the canonical centres: not a buffer (a frame never reads it), but a
        # checkpoint entry; empty until the first loss builds it.
        self.neighbours = torch.zeros(0, cfg.knn, dtype=torch.long)

    # -- splats ---------------------------------------------------------------------------------

    def unit_positions(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N, 3) positions in head lengths about the canonical box's centre (the MLPs' input)."""
        return (xyz - self.centre) / self.head_length

    def initial_splats(self) -> BoundGaussians:
        """``init_points`` splats on the canonical surface, f = positional features of mu (NPGA:
        its feature triplane queried at mu)."""
        c = self.cfg
        splats = surface_splats(self.canonical_vertices, self.faces, c.init_points, c.seed)
        splats.add_attribute(FEATURE, SplatAttribute((c.feature_dim,), lr=c.feature_lr))
        with torch.no_grad():
            splats.params[FEATURE].copy_(positional_features(self.unit_positions(splats.params["xyz"]), c.feature_dim,
                                                             c.seed))
        return splats.to(self.faces.device)

    def rigid(self, motion: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(R (3, 3), o (3,)): the head's rigid motion x -> R x + o of the frame's FLAME neck pose
        (about the rest neck joint), global rotation (about the root joint) and translation."""
        neck_R, neck_o = head_transform(motion["neck_pose"], torch.zeros(3, dtype=dtype, device=self.neck.device),
                                        self.neck.to(dtype))
        R, o = head_transform(motion["rotation"], motion["translation"], self.root.to(dtype))
        return R @ neck_R, R @ neck_o + o

    def forward(self, vertices: torch.Tensor, gaussians: BoundGaussians, camera_center: torch.Tensor,
                motion: dict) -> NPGASplats:
        """The frame's splats from the canonical ones and ``motion`` (the posed ``vertices`` are not read)."""
        p = gaussians.params
        x0, f = p["xyz"], p[FEATURE]
        z = frame_codes(motion)[0]
        code = torch.cat([fourier_features(self.unit_positions(x0), self.cfg.position_frequencies), f], 1)
        d_prior = self.mlps["prior"](code, z)  # (N, 3)
        d_detail = self.mlps["detail"](code, z)  # (N, 11 + colour)
        x_moved = x0 + (d_prior + d_detail[:, :3]) * self.head_length.to(x0.dtype)
        rotation = quat_normalize(p["rotation"] + d_detail[:, 3:7])
        log_scale = p["log_scale"] + d_detail[:, 7:10]
        R, offset = self.rigid(motion, x0.dtype)
        means = x_moved @ R.T + offset
        quats = quat_multiply(matrix_to_quat(R).expand_as(rotation), rotation)

        def canonical_view() -> torch.Tensor:
            return torch.nn.functional.normalize(means.detach() - camera_center, dim=-1) @ R.detach()

        frame = NPGASplats(means, quats, torch.exp(log_scale), p, gaussians.binding, lambda: x0, canonical_view,
                           opacity_shift=d_detail[:, 10], color_shift=d_detail[:, GEOMETRY_OFFSETS:],
                           view_dirs=torch.nn.functional.normalize(means - camera_center, dim=-1))
        frame.extras = {PRIOR_OFFSETS: d_prior, DETAIL_OFFSETS: d_detail}
        return frame

    def canonical_positions(self, gaussians: BoundGaussians) -> torch.Tensor:
        return gaussians.params["xyz"]

    def canonical_world_scales(self, gaussians: BoundGaussians) -> torch.Tensor:
        return torch.exp(gaussians.params["log_scale"])

    def canonical_to_world_rotations(self, vertices: torch.Tensor, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, 3, 3) the posed mesh's rotation from the canonical one (the same for every splat)."""
        return mesh_rotation(self.canonical_vertices, vertices).expand(len(gaussians), 3, 3)

    # -- regularisers ---------------------------------------------------------------------------

    def splats_changed(self, gaussians: BoundGaussians) -> None:
        """Densification made the rows other splats: the graph of the new canonical centres."""
        if self.cfg.lambda_lap_feature > 0 or self.cfg.lambda_lap_offsets > 0:
            self.neighbours = knn_graph(gaussians.params["xyz"].detach(), self.cfg.knn)

    def graph(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N, k) the kNN graph of the canonical centres ``xyz`` (N, 3): the one built after the
        last densification (:meth:`splats_changed`), or built now where there is none for N splats
        (the first frame; a model whose splats were changed outside training)."""
        if self.neighbours.shape[0] != xyz.shape[0]:
            self.neighbours = knn_graph(xyz.detach(), self.cfg.knn)
        if self.neighbours.device != xyz.device:
            self.neighbours = self.neighbours.to(xyz.device)
        return self.neighbours

    def losses(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        c, terms = self.cfg, {}
        f, d_prior, d_detail = ctx.params[FEATURE], ctx.splats[PRIOR_OFFSETS], ctx.splats[DETAIL_OFFSETS]
        if c.lambda_lap_feature > 0 or c.lambda_lap_offsets > 0:
            neighbours = self.graph(ctx.params["xyz"])
            if c.lambda_lap_feature > 0:
                terms["npga_lap_feature"] = c.lambda_lap_feature * laplacian_smoothness(f, neighbours)
            if c.lambda_lap_offsets > 0:
                terms["npga_lap_offsets"] = c.lambda_lap_offsets * laplacian_smoothness(d_detail, neighbours)
        if c.lambda_prior_offsets > 0 or c.lambda_detail_offsets > 0:
            terms["npga_offsets"] = (c.lambda_prior_offsets * d_prior.square().sum(1).mean()
                                     + c.lambda_detail_offsets * d_detail.square().sum(1).mean())
        if c.lambda_feature > 0:
            terms["npga_feature_norm"] = c.lambda_feature * f.square().sum(1).mean()
        return terms

    # -- training and files ---------------------------------------------------------------------

    def param_groups(self) -> list[dict]:
        decay = {"weight_decay": self.cfg.weight_decay, "decoupled_weight_decay": True}
        return [{"params": list(self.mlps["prior"].parameters()), "lr": self.cfg.prior_lr, "name": "npga_prior",
                 "frozen_until": self.cfg.prior_frozen_steps, **decay},
                {"params": list(self.mlps["detail"].parameters()), "lr": self.cfg.detail_lr, "name": "npga_detail",
                 **decay}]

    def checkpoint_entries(self) -> dict:
        return {"npga_dynamics": self.mlps.state_dict(), "npga_knn": self.neighbours}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        self.mlps.load_state_dict({k: v.float() for k, v in entries["npga_dynamics"].items()})
        self.neighbours = entries["npga_knn"].long()
