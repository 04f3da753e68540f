"""The ``npga`` opacity: the frame's opacity-logit offset of NPGA's detail MLP G (paper eq. 5),
computed by the ``npga`` geometry with the other attributes' offsets and handed on here, since the
avatar's opacity is sigmoid(logit + this component's offset). The same hand-over as GHA's opacity,
whose forward this inherits."""
from __future__ import annotations

from dataclasses import dataclass

from scene.methods.gha.opacity import GHAOpacity
from scene.model.registry import OPACITY, ComponentConfig, require_geometry_type

__all__ = ["NPGAOpacity"]


@OPACITY.register("npga")
class NPGAOpacity(GHAOpacity):
    """The opacity offset of the ``npga`` geometry's G (no parameters of its own)."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "npga"

        def validate(self, model, where: str) -> None:
            require_geometry_type(model, where, "npga", "the npga opacity", "opacity offsets (eq. 5)")
