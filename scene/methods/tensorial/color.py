"""The ``triplane`` colour: the paper's triplane and colour decoder (docs/DESIGN.md section 3.2).

Each splat's colour comes from the triplane features at its canonical position and its canonical
view direction, decoded by a tiny MLP; the splats store no colour of their own. Export fits SH to
the decoder (:meth:`TriplaneColor.direction_colors`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from scene.methods.tensorial.triplane import SH_C0, ColorDecoder, Triplane
from scene.model.components import BuildContext, ColorComponent, SplatGeometry
from scene.model.registry import COLOR, ComponentConfig
from utils.config import check_positive, check_range
from utils.errors import InputFileError

__all__ = ["TriplaneColor"]


@COLOR.register("triplane")
class TriplaneColor(ColorComponent):
    """Triplane features at the canonical position, decoded with the view direction."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "triplane"
        resolution: int = 128
        channels: list = field(default_factory=lambda: [32, 16, 16])  # XY, XZ, YZ planes
        view_pe_freqs: int = 4
        hidden: int = 128
        grid_lr: float = 2e-3  # the planes (paper)
        mlp_lr: float = 1e-4  # the decoder (paper)

        def validate(self, model, where: str) -> None:
            if len(self.channels) != 3 or any(c < 1 for c in self.channels):
                raise InputFileError(f"config key '{where}.channels' must list 3 positive channel counts (XY, XZ, "
                                     f"YZ), got {self.channels}")
            check_range(f"{where}.resolution", self.resolution, 2)
            check_range(f"{where}.view_pe_freqs", self.view_pe_freqs, 0)
            check_range(f"{where}.hidden", self.hidden, 1)
            check_positive(f"{where}.grid_lr", self.grid_lr)
            check_positive(f"{where}.mlp_lr", self.mlp_lr)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        lo, hi = ctx.head_box
        self.triplane = Triplane(cfg.resolution, tuple(cfg.channels), lo, hi)
        self.decoder = ColorDecoder(sum(cfg.channels), cfg.view_pe_freqs, cfg.hidden)

    def forward(self, geometry: SplatGeometry) -> dict:
        """``{"colors": (N, 3)}`` >= 0 of the splats seen along their canonical view directions."""
        means = geometry.canonical_means
        view = geometry.canonical_view_dirs()
        return {"colors": self.decoder.rgb(self.triplane(means), view)}

    @torch.no_grad()
    def direction_colors(self, canonical_means: torch.Tensor, params: dict, dirs: torch.Tensor,
                         binding: torch.Tensor | None = None, chunk: int = 8192) -> torch.Tensor:
        """(N, D, 3) decoder colour minus 0.5 before the clamp, i.e. SH_C0 f_dc, for canonical
        view directions ``dirs`` (D, 3): the features are looked up once, the decoder runs per
        direction in chunks of ``chunk`` splats."""
        features = self.triplane(canonical_means)  # (N, C)
        out = []
        for start in range(0, features.shape[0], chunk):
            f = features[start:start + chunk]
            n, d = f.shape[0], dirs.shape[0]
            f_dc = self.decoder(f[:, None].expand(n, d, f.shape[1]).reshape(n * d, -1),
                                dirs[None].expand(n, d, 3).reshape(n * d, 3))
            out.append((SH_C0 * f_dc).reshape(n, d, 3))
        return torch.cat(out)

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.triplane.parameters()), "lr": self.cfg.grid_lr, "name": "triplane"},
                {"params": list(self.decoder.parameters()), "lr": self.cfg.mlp_lr, "name": "color_decoder"}]

    def checkpoint_entries(self) -> dict:
        return {"triplane": self.triplane.state_dict(), "color_decoder": self.decoder.state_dict()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        # float(): a --half export stores 16-bit weights; computation stays in float32.
        self.triplane.load_state_dict({k: v.float() for k, v in entries["triplane"].items()})
        self.decoder.load_state_dict({k: v.float() for k, v in entries["color_decoder"].items()})
