"""The ``feature_lines`` opacity: the paper's feature-line blendshapes, their decoder, jaw bases and
the adaptive truncated opacity penalty (docs/DESIGN.md sections 3.3-3.6).

Each frame, the expression and jaw feature lines are blended by the frame's coefficients, looked
up at each splat's canonical position, and decoded into an offset added to the splat's canonical
opacity logit. The lines switch on after a warm-up (``warmup`` of the schedule); while they are
on, splats on triangles that barely move pay L1 on their offset (the penalty).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from scene.methods.tensorial.feature_lines import FeatureLineBlendshapes, OpacityDecoder
from scene.methods.tensorial.jaw_bases import farthest_point_jaw_bases, jaw_weights
from scene.methods.tensorial.opacity_penalty import PenaltyConfig, penalty_face_triangles, truncated_opacity_penalty
from scene.model.components import BuildContext, LossContext, OpacityComponent, SplatGeometry, padded_box
from scene.model.registry import OPACITY, ComponentConfig
from utils.config import check_choice, check_positive, check_range
from utils.errors import InputFileError

__all__ = ["FeatureLineOpacity"]


@OPACITY.register("feature_lines")
class FeatureLineOpacity(OpacityComponent):
    """Expression and jaw feature lines over a canonical box, decoded into opacity offsets."""

    @dataclass
    class Config(ComponentConfig):
        type: str = "feature_lines"
        n_expr_bases: int = 80
        n_jaw_bases: int = 16
        line_resolution: int = 64
        line_channels: int = 32
        hidden: int = 128
        hidden_layers: int = 2  # the paper's 192 -> 128 -> 128 -> 1
        # The lines' box: "head" = the canonical head box (the official code's: hair, ears and neck
        # included); "face" = the box of the face regions' vertices, padded by model.box_padding.
        box: str = "head"
        face_box_regions: list = field(default_factory=lambda: ["face", "eye_region", "lips", "teeth"])
        # Jaw-basis blend weights: "paper" (1 - d_k normalised; nearly uniform for real jaw angles) or
        # "idw" (inverse-distance weighting d_k^-power normalised: sharper; jaw_bases.py).
        jaw_weighting: str = "paper"
        jaw_idw_power: float = 2.0
        grid_lr: float = 2e-3  # the lines (paper)
        mlp_lr: float = 1e-4  # the decoder (paper: the MLP rate)
        warmup: float = 0.1  # the lines switch on after this fraction of the schedule (paper: 10%)
        penalty: PenaltyConfig = field(default_factory=PenaltyConfig)

        def masks_needed(self) -> list[str]:
            return ["feature lines"] + (["the opacity penalty"] if self.penalty.enabled else [])

        def validate(self, model, where: str) -> None:
            if self.n_expr_bases > model.n_expr:
                raise InputFileError(f"config key '{where}.n_expr_bases' cannot exceed model.n_expr ({model.n_expr}), "
                                     f"got {self.n_expr_bases}")
            for key, lo, hi in (("n_expr_bases", 1, None), ("n_jaw_bases", 1, None), ("line_resolution", 2, None),
                                ("line_channels", 1, None), ("hidden", 1, None), ("hidden_layers", 1, None),
                                ("jaw_idw_power", 0.0, None), ("warmup", 0.0, 1.0), ("penalty.lambda_opacity", 0.0, None),
                                ("penalty.tau_face", 0.0, None), ("penalty.tau_other", 0.0, None)):
                value = self.penalty if key.startswith("penalty.") else self
                check_range(f"{where}.{key}", getattr(value, key.split(".")[-1]), lo, hi)
            check_choice(f"{where}.box", self.box, ("head", "face"))
            check_choice(f"{where}.jaw_weighting", self.jaw_weighting, ("paper", "idw"))
            check_positive(f"{where}.grid_lr", self.grid_lr)
            check_positive(f"{where}.mlp_lr", self.mlp_lr)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__(cfg, ctx)
        if cfg.box == "head":
            # The whole head, hair, ears and neck (the official code's box): every splat can
            # change opacity with expression.
            box = ctx.head_box
        else:
            regions = [ctx.vertex_masks[r] for r in cfg.face_box_regions if r in ctx.vertex_masks]
            if not regions or not torch.stack(regions).any():
                raise InputFileError("model.opacity.box 'face' needs the FLAME masks' face region")
            box = padded_box(ctx.canonical_vertices[torch.stack(regions).any(0)], ctx.box_padding)
        if ctx.training_motion is not None:
            jaw_bases = farthest_point_jaw_bases(ctx.training_motion["jaw_pose"], cfg.n_jaw_bases)
        else:  # rebuilt from a checkpoint: its jaw_bases entry replaces these
            jaw_bases = torch.zeros(cfg.n_jaw_bases, 4)
        self.register_buffer("box", box.clone())
        self.register_buffer("jaw_bases", jaw_bases.float().clone())
        self.register_buffer("penalty_face", penalty_face_triangles(ctx.face_masks, ctx.faces.shape[0]),
                             persistent=False)
        self.lines = FeatureLineBlendshapes(cfg.n_expr_bases, cfg.n_jaw_bases, cfg.line_resolution,
                                            cfg.line_channels, box[0], box[1])
        self.decoder = OpacityDecoder(6 * cfg.line_channels, cfg.hidden, cfg.hidden_layers)
        self.active = True

    def set_step(self, step: int | None, schedule_iterations: int) -> None:
        self.active = step is None or step > self.cfg.warmup * schedule_iterations

    def forward(self, geometry: SplatGeometry, expr: torch.Tensor, jaw_pose: torch.Tensor) -> torch.Tensor | None:
        """(N,) logit-space offsets of the splats for one frame's expression (E,) and jaw pose
        (3,); None during the warm-up."""
        if not self.active:
            return None
        weights = jaw_weights(jaw_pose[None], self.jaw_bases, pad_to=self.cfg.n_jaw_bases,
                              kind=self.cfg.jaw_weighting, power=self.cfg.jaw_idw_power)[0]
        return self.lines(geometry.canonical_means, expr[: self.cfg.n_expr_bases], weights, self.decoder)

    def losses(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        p = self.cfg.penalty
        if not (p.enabled and self.active):
            return {}
        penalty = truncated_opacity_penalty(ctx.splats["delta"], ctx.binding, ctx.triangle_displacement(),
                                            self.penalty_face, tau_face=p.tau_face, tau_other=p.tau_other,
                                            weight_face=p.weight_face, weight_other=p.weight_other)
        return {"penalty": p.lambda_opacity * penalty}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.lines.parameters()), "lr": self.cfg.grid_lr, "name": "feature_lines"},
                {"params": list(self.decoder.parameters()), "lr": self.cfg.mlp_lr, "name": "opacity_decoder"}]

    def checkpoint_entries(self) -> dict:
        return {"feature_lines": self.lines.state_dict(), "opacity_decoder": self.decoder.state_dict(),
                "jaw_bases": self.jaw_bases.detach()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        # float(): a --half export stores 16-bit weights; computation stays in float32.
        self.lines.load_state_dict({k: v.float() for k, v in entries["feature_lines"].items()})
        self.decoder.load_state_dict({k: v.float() for k, v in entries["opacity_decoder"].items()})
        bases = entries["jaw_bases"].float()
        if bases.ndim != 2 or bases.shape[1] != 4 or not 1 <= bases.shape[0] <= self.cfg.n_jaw_bases:
            raise InputFileError(f"{where}jaw_bases.pt: {tuple(bases.shape)} jaw bases, the model expects up to "
                                 f"({self.cfg.n_jaw_bases}, 4) (model.opacity.n_jaw_bases)")
        self.jaw_bases = bases.to(self.box.device)
