"""The ``npga`` colour: NPGA's per-splat SH colour and CNN latent h (paper eqs. 3, 7), each shifted
by the frame's offsets of the detail MLP G (eq. 5), as the C = 3 + ``latent_channels`` channels the
``gha_sr`` stage (at scale 1: NPGA's screen-space refinement CNN) turns into the image:

    channels = [max(SH(sh + d_sh, view) + 0.5, 0),  h + d_h]      (N, 3 + C_h)

The first three are I_rgb, the splats' own RGB (held to the ground truth by the stage's raw-image
loss), the rest the latent image I_h. The SH (``sh0``, ``shN``, as the ``sh`` colour keeps them,
whose degree schedule this inherits) are evaluated here along the world view direction, as the
rasterizer would; the frame's SH are also given (``sh``), for export.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian_renderer.sh import eval_sh, num_sh_bases
from scene.model.components import PluginContractError, SplatAttribute, SplatGeometry
from scene.model.registry import COLOR, require_geometry_type
from scene.model.sh_color import SHColor
from utils.config import check_positive, check_range
from utils.errors import InputFileError

__all__ = ["NPGAColor", "LATENT"]

#: The per-splat CNN latent h's name among the splats (PLY columns npga_latent_0..C-1).
LATENT = "npga_latent"


@COLOR.register("npga")
class NPGAColor(SHColor):
    """SH colour and latent channels of every splat, with the ``npga`` geometry's offsets of G."""

    @dataclass
    class Config(SHColor.Config):
        type: str = "npga"
        degree: int = 3                  # 3DGS's; model.geometry.sh_degree
        lr: float = 2.5e-3               # 3DGS's (the higher bands at lr / 20)
        latent_channels: int = 16        # h's width (not in the paper); model.geometry.latent_channels
        latent_lr: float = 2.5e-3        # not in the paper

        @property
        def channels(self) -> int:
            """3 RGB + the latent channels: what the screen stage takes (its ``in_channels``)."""
            return 3 + self.latent_channels

        def validate(self, model, where: str) -> None:
            super().validate(model, where)
            require_geometry_type(model, where, "npga", "the npga colour", "offsets of its detail MLP G")
            check_range(f"{where}.latent_channels", self.latent_channels, 0)
            check_positive(f"{where}.latent_lr", self.latent_lr)
            for key, mine in (("sh_degree", self.degree), ("latent_channels", self.latent_channels)):
                theirs = getattr(model.geometry, key)
                if mine != theirs:
                    raise InputFileError(f"{where}.{'degree' if key == 'sh_degree' else key} ({mine}) must equal "
                                         f"model.geometry.{key} ({theirs}), the width of G's colour offsets")

    def splat_attributes(self) -> dict[str, SplatAttribute]:
        return {**super().splat_attributes(), LATENT: SplatAttribute((self.cfg.latent_channels,), self.cfg.latent_lr)}

    def channels(self) -> int:
        return self.cfg.channels

    def forward(self, geometry: SplatGeometry) -> dict:
        """{"colors": (N, 3 + C_h), "sh": (N, K, 3) the frame's SH, "sh_degree": the active degree}."""
        shift = getattr(geometry, "color_shift", None)
        if shift is None:
            raise PluginContractError("model.color 'npga' reads a frame of the npga geometry (the colour offsets "
                                      "of its detail MLP G)")
        p = geometry.params
        k = num_sh_bases(self.cfg.degree)
        sh = torch.cat([p["sh0"], p["shN"]], 1) + shift[:, :3 * k].reshape(-1, k, 3)
        rgb = (eval_sh(self.active_degree, sh, geometry.view_dirs) + 0.5).clamp_min(0.0)
        latent = p[LATENT] + shift[:, 3 * k:]
        return {"colors": torch.cat([rgb, latent], 1), "sh": sh, "sh_degree": self.active_degree}
