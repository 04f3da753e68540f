"""The ``gaussianhead`` geometry: canonical Gaussians moved by GaussianHead's expression-conditioned
deformation MLP, then rigidly with the head.

Per splat (stored among the splats, so densification carries them with their Adam moments):
X0 = ``xyz`` (canonical world position), Q0 = ``rotation`` (wxyz), S0 = ``log_scale``,
A0 = ``opacity`` (logit). ``binding`` is the nearest canonical triangle at initialisation,
inherited by children: the splats are not bound to it (:attr:`binds_splats` False: densification
prunes as plain 3DGS).

For a frame with expression code theta = (FLAME expression, jaw pose) (n_expr + 3,):

    X' = X0 + h D(gamma((X0 - c) / h), theta)       (deformation in head lengths h about the box centre c)
    X = R (X' - J0) + J0 + t,  Q = q(R) Q0,  S = exp(S0)

D an MLP (zero output at first), gamma a Fourier encoding, R and t FLAME's global rotation (about
the root joint J0 of the canonical mesh) and translation, as the GHA-style geometry poses its
splats (:func:`scene.methods.gha.geometry.posed_by_head`). The colour and opacity are looked up
at X' in the head's frame (:attr:`GaussianHeadSplats.deformed_means`) by the ``gaussianhead``
colour, which fills :attr:`GaussianHeadSplats.opacity_shift` for the ``gaussianhead`` opacity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from scene.methods.gha.geometry import (JAW_WIDTH, frame_codes, mesh_rotation, posed_by_head, surface_splats)
from scene.methods.gha.landmarks import head_length
from scene.methods.gha.networks import ConditionedMLP, fourier_features, fourier_width
from scene.model.components import BuildContext, GeometryComponent, PluginContractError, SplatGeometry
from scene.model.gaussian_model import BoundGaussians
from scene.model.registry import GEOMETRY, ComponentConfig
from utils.config import check_positive, check_range

__all__ = ["GaussianHeadGeometry", "GaussianHeadSplats"]


class GaussianHeadSplats(SplatGeometry):
    """A frame's splats from the ``gaussianhead`` geometry, with what its colour and opacity read.

    Attributes (besides :class:`SplatGeometry`'s):
        deformed_means: (N, 3) X', the deformed positions in the head's (canonical) frame, where
            the tilted triplane is looked up.
        head_rotation: (3, 3) R, the head's rotation from its frame to the world (the colour's SH
            are turned into the world with it).
        opacity_shift: (N,) the opacity head's logit shift, filled by the ``gaussianhead`` colour
            (the avatar evaluates the colour before the opacity); None until then.
    """

    def __init__(self, *args, deformed_means: torch.Tensor, head_rotation: torch.Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self.deformed_means = deformed_means
        self.head_rotation = head_rotation
        self.opacity_shift: torch.Tensor | None = None


@GEOMETRY.register("gaussianhead")
class GaussianHeadGeometry(GeometryComponent):
    """Free canonical Gaussians, an expression deformation MLP, FLAME's rigid head pose."""

    binds_splats = False

    @dataclass
    class Config(ComponentConfig):
        type: str = "gaussianhead"
        # Splats sampled uniformly by area on the canonical FLAME surface (the original starts from
        # its own canonical point cloud of a BFM-tracked monocular video; not given in its sources).
        init_points: int = 50000
        hidden: int = 256                # width and hidden layers of the deformation MLP (ours)
        hidden_layers: int = 3
        position_frequencies: int = 6    # Fourier frequencies of X0 (head units) for the MLP
        mlp_lr: float = 1.0e-4
        seed: int = 0                    # of the surface sampling

        def validate(self, model, where: str) -> None:
            check_range(f"{where}.init_points", self.init_points, 1)
            check_range(f"{where}.hidden", self.hidden, 1)
            check_range(f"{where}.hidden_layers", self.hidden_layers, 0)
            check_range(f"{where}.position_frequencies", self.position_frequencies, 0)
            check_positive(f"{where}.mlp_lr", self.mlp_lr)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        if ctx.rig is None:
            raise PluginContractError("model.geometry 'gaussianhead' needs FLAME's rig (BuildContext.rig) for the "
                                      "root joint")
        canonical = ctx.canonical_vertices.float()
        self.register_buffer("faces", ctx.faces.long().clone())
        self.register_buffer("canonical_vertices", canonical.clone())
        self.register_buffer("root", ctx.rig.joint_regressor[0].to(canonical) @ canonical)
        lo, hi = canonical.min(0).values, canonical.max(0).values
        self.register_buffer("centre", 0.5 * (lo + hi))
        self.register_buffer("head_length", torch.tensor(head_length(canonical)))
        self.deformation = ConditionedMLP(fourier_width(3, cfg.position_frequencies), ctx.n_expr + JAW_WIDTH,
                                          cfg.hidden, cfg.hidden_layers, 3)

    def initial_splats(self) -> BoundGaussians:
        """``init_points`` splats on the canonical surface (:func:`surface_splats`)."""
        c = self.cfg
        return surface_splats(self.canonical_vertices, self.faces, c.init_points, c.seed).to(self.faces.device)

    def deformed_positions(self, x0: torch.Tensor, motion: dict) -> torch.Tensor:
        """(N, 3) X' of canonical positions ``x0`` (N, 3) for the frame's expression (module docstring)."""
        theta, _ = frame_codes(motion)
        h = self.head_length.to(x0.dtype)
        code = fourier_features((x0 - self.centre.to(x0.dtype)) / h, self.cfg.position_frequencies)
        return x0 + self.deformation(code, theta) * h

    def forward(self, vertices: torch.Tensor, gaussians: BoundGaussians, camera_center: torch.Tensor,
                motion: dict) -> GaussianHeadSplats:
        """The frame's splats from the canonical ones and ``motion`` (the posed ``vertices`` are not read)."""
        p = gaussians.params
        x0 = p["xyz"]
        deformed = self.deformed_positions(x0, motion)
        means, quats, R = posed_by_head(deformed, p["rotation"], motion, self.root)

        def canonical_view() -> torch.Tensor:
            return torch.nn.functional.normalize(means.detach() - camera_center, dim=-1) @ R.detach()

        return GaussianHeadSplats(means, quats, torch.exp(p["log_scale"]), p, gaussians.binding, lambda: x0,
                                  canonical_view, deformed_means=deformed, head_rotation=R)

    def canonical_positions(self, gaussians: BoundGaussians) -> torch.Tensor:
        return gaussians.params["xyz"]

    def canonical_world_scales(self, gaussians: BoundGaussians) -> torch.Tensor:
        return torch.exp(gaussians.params["log_scale"])

    def canonical_to_world_rotations(self, vertices: torch.Tensor, gaussians: BoundGaussians) -> torch.Tensor:
        """(N, 3, 3) the posed mesh's rotation from the canonical one (:func:`mesh_rotation`)."""
        return mesh_rotation(self.canonical_vertices, vertices).expand(len(gaussians), 3, 3)

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.deformation.parameters()), "lr": self.cfg.mlp_lr,
                 "name": "gaussianhead_deformation"}]

    def checkpoint_entries(self) -> dict:
        return {"gaussianhead_deformation": self.deformation.state_dict()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        self.deformation.load_state_dict({k: v.float() for k, v in entries["gaussianhead_deformation"].items()})
