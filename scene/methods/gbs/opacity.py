"""The ``blendshape_opacity`` opacity: one opacity-logit delta per splat and Gaussian blendshape
(GBS-style; docs/METHODS_GBS.md): a frame's offset is sum_k psi_k bs_opacity_k, added to the
splat's neutral logit (the avatar's sigmoid(logit + offset)). The deltas start at zero."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from scene.methods.gbs.blendshapes import leading_coefficients
from scene.model.components import OpacityComponent, SplatAttribute, SplatGeometry
from scene.model.registry import OPACITY, ComponentConfig
from utils.config import check_positive, check_range
from utils.errors import InputFileError

__all__ = ["BlendshapeOpacity"]


@OPACITY.register("blendshape_opacity")
class BlendshapeOpacity(OpacityComponent):
    """Expression blendshapes of the opacity logit."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "blendshape_opacity"
        n_blendshapes: int = 50  # the first K expression components (the geometry's K in the shipped configs)
        lr: float = 0.05  # 3DGS's opacity rate

        def validate(self, model, where: str) -> None:
            check_range(f"{where}.n_blendshapes", self.n_blendshapes, 1)
            if self.n_blendshapes > model.n_expr:
                raise InputFileError(f"config key '{where}.n_blendshapes' cannot exceed model.n_expr "
                                     f"({model.n_expr}), got {self.n_blendshapes}")
            check_positive(f"{where}.lr", self.lr)

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        return {"bs_opacity": SplatAttribute((self.cfg.n_blendshapes,), self.cfg.lr)}

    def forward(self, geometry: SplatGeometry, expr: torch.Tensor, jaw_pose: torch.Tensor) -> torch.Tensor:
        """(N,) the logit offsets for the frame's expression ``expr`` (E,)."""
        deltas = geometry.params["bs_opacity"]
        return deltas @ leading_coefficients(expr, self.cfg.n_blendshapes).to(deltas.dtype)
