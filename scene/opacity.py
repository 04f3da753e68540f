"""The avatar's opacity component: feature-line blendshapes and their decoder (docs/DESIGN.md
3.3-3.4), the per-frame offset added to each splat's canonical opacity logit.

Avatars without one (GaussianAvatars, the ablation) have static opacity. The interface is the
colour component's (:mod:`scene.color`): ``param_groups``, ``checkpoint_entries``,
``load_checkpoint_entries``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from scene.feature_lines import FeatureLineBlendshapes, OpacityDecoder
from scene.jaw_bases import jaw_weights
from utils.errors import InputFileError

if TYPE_CHECKING:  # the configs live with the avatar and the run (scene/avatar.py, scene/config.py)
    from scene.avatar import ModelConfig
    from scene.config import OptimConfig

__all__ = ["FeatureLineOpacity"]


class FeatureLineOpacity(torch.nn.Module):
    """Expression and jaw feature lines over a canonical box, decoded into opacity offsets.

    Args:
        cfg: the model config (bases, line resolution and channels, decoder, jaw weighting).
        box_lo, box_hi: (3,) the canonical box the lines span (head or face, ``feature_line_box``).
        jaw_bases: (K, 4) wxyz jaw-rotation bases (:func:`scene.jaw_bases.farthest_point_jaw_bases`).
    """

    CHECKPOINT_ENTRIES = ("feature_lines", "opacity_decoder", "jaw_bases")

    def __init__(self, cfg: ModelConfig, box_lo: torch.Tensor, box_hi: torch.Tensor, jaw_bases: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("box", torch.stack([box_lo, box_hi]))
        self.register_buffer("jaw_bases", jaw_bases.float().clone())
        self.lines = FeatureLineBlendshapes(cfg.n_expr_bases, cfg.n_jaw_bases, cfg.line_resolution,
                                            cfg.line_channels, box_lo, box_hi)
        self.decoder = OpacityDecoder(6 * cfg.line_channels, cfg.opacity_hidden, cfg.opacity_hidden_layers)

    def forward(self, canonical_means: torch.Tensor, expr: torch.Tensor, jaw_pose: torch.Tensor) -> torch.Tensor:
        """(N,) logit-space offsets for splats at ``canonical_means`` (N, 3), one frame's
        expression (E,) and jaw pose (3,)."""
        weights = jaw_weights(jaw_pose[None], self.jaw_bases, pad_to=self.cfg.n_jaw_bases,
                              kind=self.cfg.jaw_weighting, power=self.cfg.jaw_idw_power)[0]
        return self.lines(canonical_means, expr[: self.cfg.n_expr_bases], weights, self.decoder)

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """Adam groups: the lines at ``grid_lr``, the decoder at ``opacity_mlp_lr``."""
        return [{"params": list(self.lines.parameters()), "lr": optim.grid_lr, "name": "feature_lines"},
                {"params": list(self.decoder.parameters()), "lr": optim.opacity_mlp_lr, "name": "opacity_decoder"}]

    def checkpoint_entries(self) -> dict:
        """Checkpoint name -> state: ``feature_lines.pt``, ``opacity_decoder.pt``, ``jaw_bases.pt`` (K, 4)."""
        return {"feature_lines": self.lines.state_dict(), "opacity_decoder": self.decoder.state_dict(),
                "jaw_bases": self.jaw_bases.detach()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        # float(): a --half export stores 16-bit weights; computation stays in float32.
        self.lines.load_state_dict({k: v.float() for k, v in entries["feature_lines"].items()})
        self.decoder.load_state_dict({k: v.float() for k, v in entries["opacity_decoder"].items()})
        bases = entries["jaw_bases"].float()
        if bases.shape != self.jaw_bases.shape:
            raise InputFileError(f"{where}jaw_bases.pt: {tuple(bases.shape)} jaw bases, the model expects "
                                 f"{tuple(self.jaw_bases.shape)}")
        self.jaw_bases.copy_(bases)
