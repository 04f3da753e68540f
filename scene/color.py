"""The avatar's colour component: the paper's triplane and colour decoder (docs/DESIGN.md 3.2).

A colour component maps each splat's canonical position and canonical view direction to an RGB
colour. Avatars without one (the GaussianAvatars config) keep per-splat SH in their splats
instead (:class:`scene.gaussian_model.BoundGaussians`). Components share one interface with the
opacity component (:mod:`scene.opacity`): ``param_groups(optim)``, ``checkpoint_entries()`` and
``load_checkpoint_entries(entries)`` (names in ``CHECKPOINT_ENTRIES``), which the trainer and the
checkpoint code use without knowing which components an avatar has.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from scene.triplane import ColorDecoder, Triplane

if TYPE_CHECKING:  # the configs live with the avatar and the run (scene/avatar.py, scene/config.py)
    from scene.avatar import ModelConfig
    from scene.config import OptimConfig

__all__ = ["TriplaneColor"]


class TriplaneColor(torch.nn.Module):
    """Triplane features at the canonical position, decoded with the view direction.

    Args:
        cfg: the model config (triplane resolution and channels, view frequencies, decoder width).
        box_lo, box_hi: (3,) the canonical box the planes span.
    """

    CHECKPOINT_ENTRIES = ("triplane", "color_decoder")

    def __init__(self, cfg: ModelConfig, box_lo: torch.Tensor, box_hi: torch.Tensor):
        super().__init__()
        self.triplane = Triplane(cfg.triplane_resolution, tuple(cfg.triplane_channels), box_lo, box_hi)
        self.decoder = ColorDecoder(sum(cfg.triplane_channels), cfg.view_pe_freqs, cfg.color_hidden)

    def forward(self, canonical_means: torch.Tensor, view_dirs_canonical: torch.Tensor) -> torch.Tensor:
        """(N, 3) colours >= 0 of splats at ``canonical_means`` (N, 3) seen along the unit
        ``view_dirs_canonical`` (N, 3)."""
        return self.decoder.rgb(self.triplane(canonical_means), view_dirs_canonical)

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """Adam groups: the planes at ``grid_lr``, the decoder at ``mlp_lr``."""
        return [{"params": list(self.triplane.parameters()), "lr": optim.grid_lr, "name": "triplane"},
                {"params": list(self.decoder.parameters()), "lr": optim.mlp_lr, "name": "color_decoder"}]

    def checkpoint_entries(self) -> dict:
        """Checkpoint name -> state (one file each: ``triplane.pt``, ``color_decoder.pt``)."""
        return {"triplane": self.triplane.state_dict(), "color_decoder": self.decoder.state_dict()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        # float(): a --half export stores 16-bit weights; computation stays in float32.
        self.triplane.load_state_dict({k: v.float() for k, v in entries["triplane"].items()})
        self.decoder.load_state_dict({k: v.float() for k, v in entries["color_decoder"].items()})
