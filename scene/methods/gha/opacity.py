"""The ``gha`` opacity: the frame's opacity-logit shift of GHA's attribute MLPs (paper eq. 5),
A' = A0 + l_exp f_att_exp(F0, theta) + l_pose f_att_pose(F0, beta), computed by the ``gha``
geometry together with the rotation and scale shifts and handed on here, since the avatar's
opacity is sigmoid(logit + this component's offset)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from scene.methods.gha.requirements import require_gha_geometry
from scene.model.components import OpacityComponent, PluginContractError, SplatGeometry
from scene.model.registry import OPACITY, ComponentConfig

__all__ = ["GHAOpacity"]


@OPACITY.register("gha")
class GHAOpacity(OpacityComponent):
    """The opacity shift of the ``gha`` geometry's attribute MLPs (no parameters of its own)."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "gha"

        def validate(self, model, where: str) -> None:
            require_gha_geometry(model, where, "opacity")

    #: What fills the frame's ``opacity_shift``, for the error when nothing did.
    shift_source = "geometry"

    def forward(self, geometry: SplatGeometry, expr: torch.Tensor, jaw_pose: torch.Tensor) -> torch.Tensor:
        """(N,) logit offsets: the geometry's ``opacity_shift`` (NPGA's and GaussianHead's opacities,
        subclasses, read their frame's splats the same way)."""
        shift = getattr(geometry, "opacity_shift", None)
        if shift is None:
            raise PluginContractError(f"model.opacity {self.type_name!r} reads the opacity shifts that the "
                                      f"{self.type_name} {self.shift_source} gives a frame")
        return shift
