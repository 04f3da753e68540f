"""The ``gha`` colour: GHA's expression- and pose-dependent multi-channel colour (paper eq. 4),

    C' = l_exp f_col_exp(F0, theta) + l_pose f_col_pose(F0, beta),

C channels (paper: 32) of which the first three are RGB (held to the ground truth by the ``gha_sr``
stage's low-resolution loss); a screen stage (``gha_sr``) makes the image of them. The colour does
not depend on the view direction (eq. 4 has none), so export writes the frame's first three
channels as the splats' colour without an SH fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from scene.methods.gha.geometry import FEATURE, JAW_WIDTH, POSE_WIDTH, GHASplats, frame_codes
from scene.methods.gha.networks import ConditionedMLP
from scene.methods.gha.requirements import require_gha_geometry
from scene.model.components import BuildContext, ColorComponent, PluginContractError, SplatGeometry
from scene.model.registry import COLOR, ComponentConfig
from utils.config import check_positive, check_range
from utils.errors import InputFileError

__all__ = ["GHAColor"]


@COLOR.register("gha")
class GHAColor(ColorComponent):
    """Two colour MLPs of the per-splat feature F0 and the frame's expression code / head pose."""

    view_dependent = False

    @dataclass
    class Config(ComponentConfig):
        type: str = "gha"
        channels: int = 32               # paper: a 32-channel image, RGB first
        feature_dim: int = 128           # F0's width: model.geometry.feature_dim
        hidden: int = 256                # not in the paper
        hidden_layers: int = 3
        mlp_lr: float = 1.0e-4           # paper: 1e-4 for the colour MLPs

        def validate(self, model, where: str) -> None:
            require_gha_geometry(model, where, "colour")
            check_range(f"{where}.channels", self.channels, 3)
            check_range(f"{where}.hidden", self.hidden, 1)
            check_range(f"{where}.hidden_layers", self.hidden_layers, 0)
            check_positive(f"{where}.mlp_lr", self.mlp_lr)
            if self.feature_dim != model.geometry.feature_dim:
                raise InputFileError(f"{where}.feature_dim ({self.feature_dim}) must equal model.geometry.feature_dim "
                                     f"({model.geometry.feature_dim}), the width of the features it reads")

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        theta_width = ctx.n_expr + JAW_WIDTH
        self.mlps = torch.nn.ModuleDict({
            "col_exp": ConditionedMLP(cfg.feature_dim, theta_width, cfg.hidden, cfg.hidden_layers, cfg.channels),
            "col_pose": ConditionedMLP(cfg.feature_dim, POSE_WIDTH, cfg.hidden, cfg.hidden_layers, cfg.channels),
        })
        with torch.no_grad():  # zero outputs but mid-grey RGB at first (both blend to 0.5)
            for net in self.mlps.values():
                net.net[-1].bias[:3].fill_(0.5)

    def channels(self) -> int:
        return self.cfg.channels

    def forward(self, geometry: SplatGeometry) -> dict:
        """{"colors": (N, C)} for the frame's motion (``geometry.motion``)."""
        if not isinstance(geometry, GHASplats) or geometry.motion is None:
            raise PluginContractError("model.color 'gha' reads a frame of the gha geometry (its blend weights and "
                                      "the frame's FLAME parameters)")
        theta, beta = frame_codes(geometry.motion)
        f0 = geometry.params[FEATURE]
        lam = geometry.expression_weight[:, None]
        return {"colors": lam * self.mlps["col_exp"](f0, theta) + (1 - lam) * self.mlps["col_pose"](f0, beta)}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.mlps.parameters()), "lr": self.cfg.mlp_lr, "name": "gha_color"}]

    def checkpoint_entries(self) -> dict:
        return {"gha_color": self.mlps.state_dict()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        self.mlps.load_state_dict({k: v.float() for k, v in entries["gha_color"].items()})
