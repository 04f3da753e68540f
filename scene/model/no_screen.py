"""The ``none`` screen-space stage: the rasterized colours are the image (3DGS, GaussianAvatars,
the tensorial avatar)."""
from __future__ import annotations

from dataclasses import dataclass

from scene.model.components import ScreenComponent
from scene.model.registry import SCREEN, ComponentConfig

__all__ = ["NoScreen"]


@SCREEN.register("none")
class NoScreen(ScreenComponent):
    """No stage after rasterization."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "none"

    def enabled(self) -> bool:
        return False  # render_avatar then never calls forward(): the rasterized colours are the image
