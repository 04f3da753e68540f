"""The ``gaussianhead`` opacity: the frame's opacity-logit shift of GaussianHead's opacity and
geometry-feature head, which the ``gaussianhead`` colour evaluates together with the SH and hands
on through the frame's splats (the avatar's opacity is sigmoid(A0 + shift)). The same hand-over as
GHA's opacity, whose forward this inherits."""
from __future__ import annotations

from dataclasses import dataclass

from scene.methods.gaussianhead.requirements import require_slot
from scene.methods.gha.opacity import GHAOpacity
from scene.model.registry import OPACITY, ComponentConfig

__all__ = ["GaussianHeadOpacity"]


@OPACITY.register("gaussianhead")
class GaussianHeadOpacity(GHAOpacity):
    """The opacity shift of the ``gaussianhead`` colour's opacity head (no parameters of its own)."""

    shift_source = "colour"

    @dataclass
    class Config(ComponentConfig):
        type: str = "gaussianhead"

        def validate(self, model, where: str) -> None:
            require_slot(model, "geometry", where, "the frame's splats")
            require_slot(model, "color", where, "the opacity head's shift")
