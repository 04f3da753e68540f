"""The ``gaussianhead`` opacity: the frame's opacity-logit shift of GaussianHead's opacity and
geometry-feature head, which the ``gaussianhead`` colour evaluates together with the SH and hands
on through the frame's splats (the avatar's opacity is sigmoid(A0 + shift))."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from scene.methods.gaussianhead.geometry import GaussianHeadSplats
from scene.methods.gaussianhead.requirements import require_slot
from scene.model.components import OpacityComponent, PluginContractError, SplatGeometry
from scene.model.registry import OPACITY, ComponentConfig

__all__ = ["GaussianHeadOpacity"]


@OPACITY.register("gaussianhead")
class GaussianHeadOpacity(OpacityComponent):
    """The opacity shift of the ``gaussianhead`` colour's opacity head (no parameters of its own)."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "gaussianhead"

        def validate(self, model, where: str) -> None:
            require_slot(model, "geometry", where, "the frame's splats")
            require_slot(model, "color", where, "the opacity head's shift")

    def forward(self, geometry: SplatGeometry, expr: torch.Tensor, jaw_pose: torch.Tensor) -> torch.Tensor:
        """(N,) logit offsets."""
        if not isinstance(geometry, GaussianHeadSplats) or geometry.opacity_shift is None:
            raise PluginContractError("model.opacity 'gaussianhead' reads the opacity shift that the gaussianhead "
                                      "colour gives a frame of the gaussianhead geometry")
        return geometry.opacity_shift
