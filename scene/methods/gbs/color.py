"""The ``blendshape_sh`` colour: per-splat SH plus one SH delta per Gaussian blendshape
(GBS-style; docs/METHODS_GBS.md).

A frame's coefficients are sh + sum_k psi_k bs_sh_k, psi the frame's first K FLAME expression
coefficients (``SplatGeometry.motion``); without a motion (canonical look-ups) the neutral ones.
The neutral SH, their PLY columns (3DGS's ``f_dc_*`` / ``f_rest_*``), rates and the rising active
degree are the ``sh`` colour's; the deltas ``bs_sh`` (N, K, (d+1)^2, 3) start at zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian_renderer.sh import num_sh_bases
from scene.methods.gbs.blendshapes import blend, leading_coefficients
from scene.model.components import SplatAttribute, SplatGeometry
from scene.model.registry import COLOR
from scene.model.sh_color import SHColor
from utils.config import check_positive, check_range
from utils.errors import InputFileError

__all__ = ["BlendshapeSHColor"]


@COLOR.register("blendshape_sh")
class BlendshapeSHColor(SHColor):
    """Neutral SH per splat plus K expression blendshapes of SH."""

    @dataclass
    class Config(SHColor.Config):
        type: str = "blendshape_sh"
        n_blendshapes: int = 50  # the first K expression components (the geometry's K in the shipped configs)
        delta_lr: float = 2.5e-3  # the deltas' DC band; their higher bands learn at delta_lr / 20

        def validate(self, model, where: str) -> None:
            super().validate(model, where)
            check_range(f"{where}.n_blendshapes", self.n_blendshapes, 1)
            if self.n_blendshapes > model.n_expr:
                raise InputFileError(f"config key '{where}.n_blendshapes' cannot exceed model.n_expr "
                                     f"({model.n_expr}), got {self.n_blendshapes}")
            check_positive(f"{where}.delta_lr", self.delta_lr)

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        c = self.cfg
        out = super().splat_attributes()
        # One attribute for the DC deltas and one for the rest, so that each has its rate (as sh0 / shN).
        out["bs_sh0"] = SplatAttribute((c.n_blendshapes, 1, 3), c.delta_lr)
        out["bs_shN"] = SplatAttribute((c.n_blendshapes, num_sh_bases(c.degree) - 1, 3), c.delta_lr / 20.0)
        return out

    def sh(self, params: dict, expr: torch.Tensor | None = None) -> torch.Tensor:
        """(N, (d+1)^2, 3) the coefficients for expression ``expr`` (E,) (None: the neutral ones)."""
        neutral = super().own_sh(params, None)
        if expr is None:
            return neutral
        deltas = torch.cat([params["bs_sh0"], params["bs_shN"]], dim=2)  # (N, K, (d+1)^2, 3)
        return blend(neutral, deltas, leading_coefficients(expr, self.cfg.n_blendshapes).to(neutral.dtype))

    def forward(self, geometry: SplatGeometry) -> dict:
        expr = None if geometry.motion is None else geometry.motion["expr"]
        return {"sh": self.sh(geometry.params, expr), "sh_degree": self.active_degree}
