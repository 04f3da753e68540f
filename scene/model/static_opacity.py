"""The ``static`` opacity: each splat keeps its canonical opacity in every frame (3DGS,
GaussianAvatars): no offsets, no parameters beyond the splats' own opacity logit."""
from __future__ import annotations

from dataclasses import dataclass

from scene.model.components import OpacityComponent
from scene.model.registry import OPACITY, ComponentConfig

__all__ = ["StaticOpacity"]


@OPACITY.register("static")
class StaticOpacity(OpacityComponent):
    """No expression-dependent offset (:meth:`forward` returns None)."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "static"
