"""The ``gaussianhead`` colour: the tilted triplane and its two heads (GaussianHead's appearance).

Per frame, at the deformed positions X' of the ``gaussianhead`` geometry (N, 3) and each splat's K
tilts (the per-splat tensor ``tilt`` (N, K, 4), quaternion offsets from the identity, carried
through densification like every per-splat tensor):

    f = tilted_triplane(X', q)                  (N, C)     (:mod:`.tilted_triplane`)
    (a, g) = opacity_feature_head(f)            (N,), (N, F)
    sh = sh_head(g)                             (N, (d + 1)^2, 3), in the head's frame

The SH are turned into the world with the head's rotation (:mod:`.sh_rotation`), so the
rasterizer's world view direction gives the colour of the view direction in the head's frame;
``a`` is the frame's opacity-logit shift, handed to the ``gaussianhead`` opacity through the
frame's splats (:attr:`GaussianHeadSplats.opacity_shift`). Export writes the frame's SH as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian_renderer.sh import num_sh_bases, sh_basis
from scene.methods.gaussianhead.geometry import GaussianHeadSplats
from scene.methods.gaussianhead.heads import OpacityFeatureHead, SHHead
from scene.methods.gaussianhead.requirements import require_slot
from scene.methods.gaussianhead.sh_rotation import fit_directions, rotate_sh, sh_rotation
from scene.methods.gaussianhead.tilted_triplane import TiltedTriplane, tilt_quaternions
from scene.model.components import BuildContext, ColorComponent, PluginContractError, SplatAttribute, SplatGeometry
from scene.model.registry import COLOR, ComponentConfig
from scene.model.sh_color import active_sh_degree
from utils.config import check_positive, check_range
from utils.errors import InputFileError

__all__ = ["GaussianHeadColor", "TILT"]

#: The per-splat tilts' name among the splats (PLY columns tilt_0..4K-1).
TILT = "tilt"


@COLOR.register("gaussianhead")
class GaussianHeadColor(ColorComponent):
    """Tilted triplane -> opacity and geometry-feature head -> SH head."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "gaussianhead"
        resolution: int = 64             # GaussianHead: 64^2 planes
        channels: int = 32               # GaussianHead: 32 channels per plane, a 32-D feature
        rotations: int = 4               # GaussianHead: K = 4 tilts per Gaussian
        init_std: float = 0.1            # planes start at 1 + N(0, init_std^2) (ours)
        feature_dim: int = 32            # GaussianHead: the head's 33 outputs = opacity + 32-D feature
        hidden: int = 64                 # GaussianHead: 32 -> 64 -> 64 -> 33
        hidden_layers: int = 2
        sh_hidden: int = 64              # the SH head's hidden width and layers (ours)
        sh_hidden_layers: int = 1
        degree: int = 3                  # SH degree, one band more every min(1000, schedule / 10) steps
        grid_lr: float = 2.0e-3          # the planes (ours: the flagship triplane's)
        mlp_lr: float = 1.0e-3           # both heads (ours)
        tilt_lr: float = 1.0e-3          # the tilts (ours: 3DGS's rotation rate)

        def validate(self, model, where: str) -> None:
            require_slot(model, "geometry", where, "the deformed positions and the head's rotation")
            for key in ("channels", "rotations", "feature_dim", "hidden", "sh_hidden"):
                check_range(f"{where}.{key}", getattr(self, key), 1)
            check_range(f"{where}.resolution", self.resolution, 2)
            check_range(f"{where}.hidden_layers", self.hidden_layers, 0)
            check_range(f"{where}.sh_hidden_layers", self.sh_hidden_layers, 0)
            check_range(f"{where}.degree", self.degree, 0, 3)
            check_range(f"{where}.init_std", self.init_std, 0.0)
            for key in ("grid_lr", "mlp_lr", "tilt_lr"):
                check_positive(f"{where}.{key}", getattr(self, key))
            if self.channels % self.rotations:
                raise InputFileError(f"{where}.channels ({self.channels}) must be a multiple of {where}.rotations "
                                     f"({self.rotations}): each tilted copy samples its own equal channel slice")

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        lo, hi = ctx.head_box
        self.field = TiltedTriplane(cfg.resolution, cfg.channels, cfg.rotations, lo, hi, cfg.init_std)
        self.heads = torch.nn.ModuleDict({
            "opacity_feature": OpacityFeatureHead(cfg.channels, cfg.hidden, cfg.hidden_layers, cfg.feature_dim),
            "sh": SHHead(cfg.feature_dim, cfg.sh_hidden, cfg.sh_hidden_layers, cfg.degree)})
        self.active_degree = cfg.degree
        # The SH rotation's fixed fit (not state: the same for every avatar).
        dirs = fit_directions()
        self.register_buffer("fit_dirs", dirs.float(), persistent=False)
        self.register_buffer("fit_pinv", torch.linalg.pinv(sh_basis(cfg.degree, dirs)).float(), persistent=False)

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        return {TILT: SplatAttribute((self.cfg.rotations, 4), self.cfg.tilt_lr)}

    def appearance(self, positions: torch.Tensor, tilt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(opacity-logit shift (N,), SH (N, (d + 1)^2, 3) in the head's frame) of splats at
        ``positions`` (N, 3) in the head's frame with tilt offsets ``tilt`` (N, K, 4)."""
        features = self.field(positions, tilt_quaternions(tilt))
        shift, geometry_feature = self.heads["opacity_feature"](features)
        return shift, self.heads["sh"](geometry_feature)

    def forward(self, geometry: SplatGeometry) -> dict:
        """{"sh": (N, (d + 1)^2, 3) world-space SH, "sh_degree": the active degree}; fills the
        frame's ``opacity_shift``."""
        if not isinstance(geometry, GaussianHeadSplats):
            raise PluginContractError("model.color 'gaussianhead' reads a frame of the gaussianhead geometry (its "
                                      "deformed positions and head rotation)")
        shift, sh = self.appearance(geometry.deformed_means, geometry.params[TILT])
        geometry.opacity_shift = shift
        R = geometry.head_rotation
        return {"sh": rotate_sh(sh, sh_rotation(self.cfg.degree, R, self.fit_dirs, self.fit_pinv)),
                "sh_degree": self.active_degree}

    @torch.no_grad()
    def own_sh(self, params: dict, degree: int | None) -> torch.Tensor:
        """(N, (degree + 1)^2, 3) the heads' SH at the splats' canonical positions (no expression,
        no head pose); export writes a frame's own SH (:meth:`forward`) in their place."""
        degree = self.cfg.degree if degree is None else min(degree, self.cfg.degree)
        return self.appearance(params["xyz"], params[TILT])[1][:, :num_sh_bases(degree)]

    def set_step(self, step: int | None, schedule_iterations: int) -> None:
        self.active_degree = active_sh_degree(step, schedule_iterations, self.cfg.degree)

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.field.parameters()), "lr": self.cfg.grid_lr, "name": "tilted_triplane"},
                {"params": list(self.heads.parameters()), "lr": self.cfg.mlp_lr, "name": "gaussianhead_heads"}]

    def checkpoint_entries(self) -> dict:
        return {"tilted_triplane": self.field.state_dict(), "gaussianhead_heads": self.heads.state_dict()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        # float(): a --half export stores 16-bit weights; computation stays in float32.
        self.field.load_state_dict({k: v.float() for k, v in entries["tilted_triplane"].items()})
        self.heads.load_state_dict({k: v.float() for k, v in entries["gaussianhead_heads"].items()})
