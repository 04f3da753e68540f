"""The ``sh`` colour: per-splat spherical harmonics (3DGS, GaussianAvatars).

Each splat stores its SH coefficients (``sh0`` (N, 1, 3) and ``shN`` (N, K-1, 3), K = (degree+1)^2)
among the splats, so densification carries them; the rasterizer evaluates them for the world view
direction. The active degree rises during training, one band every ``min(1000, schedule / 10)``
iterations (GaussianAvatars raises it every 1000; shorter schedules scale that).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian_renderer.sh import num_sh_bases
from scene.model.components import BuildContext, ColorComponent, SplatAttribute, SplatGeometry
from scene.model.registry import COLOR, ComponentConfig
from utils.config import check_positive, check_range

__all__ = ["SHColor", "active_sh_degree"]


def active_sh_degree(step: int | None, schedule_iterations: int, degree: int) -> int:
    """The SH degree in use at 1-based ``step`` of a schedule of ``schedule_iterations`` (None:
    trained, all of ``degree``): one band more every ``min(1000, schedule / 10)`` iterations."""
    if step is None:
        return degree
    interval = max(1, min(1000, schedule_iterations // 10))
    return min(degree, step // interval)


@COLOR.register("sh")
class SHColor(ColorComponent):
    """Per-splat SH colour of degree ``cfg.degree``."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "sh"
        degree: int = 3
        # The DC band's learning rate; the higher bands learn at lr / 20 (3DGS's f_rest).
        lr: float = 2.5e-3

        def validate(self, model, where: str) -> None:
            check_range(f"{where}.degree", self.degree, 0, 3)
            check_positive(f"{where}.lr", self.lr)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        self.active_degree = cfg.degree

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        k = num_sh_bases(self.cfg.degree)
        return {"sh0": SplatAttribute((1, 3), self.cfg.lr, ply_prefix="f_dc_"),
                "shN": SplatAttribute((k - 1, 3), self.cfg.lr / 20.0, ply_prefix="f_rest_", channel_major=True)}

    def set_step(self, step: int | None, schedule_iterations: int) -> None:
        self.active_degree = active_sh_degree(step, schedule_iterations, self.cfg.degree)

    def forward(self, geometry: SplatGeometry) -> dict:
        return {"sh": torch.cat([geometry.params["sh0"], geometry.params["shN"]], dim=1),
                "sh_degree": self.active_degree}

    def own_sh(self, params: dict, degree: int | None) -> torch.Tensor:
        degree = self.cfg.degree if degree is None else min(degree, self.cfg.degree)
        return torch.cat([params["sh0"], params["shN"]], dim=1)[:, : num_sh_bases(degree)]
