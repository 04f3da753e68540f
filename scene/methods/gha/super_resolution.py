"""The ``gha_sr`` screen stage: GHA's super-resolution network Psi (paper section 4.2) and its losses.

The colour's C channels are rasterized at 1/``scale`` of the frame (GHA: a 32-channel 512^2 image for
a 2048^2 output, scale 4); this CNN makes the (H, W, 3) image of them. Ours (the paper gives no
layers): a 3x3 convolution to ``hidden`` channels, per factor 2 of ``scale`` one upsampling stage
(3x3 convolution to 4 x hidden, pixel shuffle, LeakyReLU, 3x3 convolution, LeakyReLU), a 3x3
convolution to RGB added to the bilinearly upsampled first three channels (zero at first, so the
stage starts as plain upsampling of the low-resolution RGB). Scale 1: the same without upsampling.

Losses (eq. 8; the trainer's photometric term is L1(I_hr) with ``optim.lambda_dssim: 0``):
``lambda_vgg`` x the VGG perceptual distance of I_hr to the ground truth (LPIPS-VGG, the paper's
[70], on :class:`utils.lpips.VGG16Features` with its calibrated heads) and ``lambda_lr`` x L1 of the
first three feature channels against the ground truth area-downsampled to their size; beside it
``lambda_lr_dssim`` x their D-SSIM (0 for GHA; NPGA, which uses this stage at scale 1 as its
refinement CNN, holds the raw image to the ground truth with the same L1 + D-SSIM as the refined one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scene.model.components import LossContext, ScreenComponent
from scene.model.registry import SCREEN, ComponentConfig
from scene.training.losses import photometric_loss
from utils.config import check_positive, check_range
from utils.errors import InputFileError, MissingFileError
from utils.lpips import LPIPS

__all__ = ["GHASuperResolution", "SuperResolutionCNN", "downsample"]


def downsample(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, C) -> (height, width, C) by area averaging."""
    return F.interpolate(image.permute(2, 0, 1)[None], size=(height, width), mode="area")[0].permute(1, 2, 0)


class SuperResolutionCNN(torch.nn.Module):
    """(1, C, h, w) features -> (1, 3, h s, w s) RGB, s = ``scale`` (a power of two)."""

    def __init__(self, in_channels: int, hidden: int, scale: int):
        super().__init__()
        act = lambda: torch.nn.LeakyReLU(0.2)  # noqa: E731
        self.head = torch.nn.Sequential(torch.nn.Conv2d(in_channels, hidden, 3, padding=1), act())
        stages = []
        for _ in range(int(round(math.log2(scale)))):
            stages += [torch.nn.Conv2d(hidden, 4 * hidden, 3, padding=1), torch.nn.PixelShuffle(2), act(),
                       torch.nn.Conv2d(hidden, hidden, 3, padding=1), act()]
        self.body = torch.nn.Sequential(*stages)
        self.tail = torch.nn.Conv2d(hidden, 3, 3, padding=1)
        torch.nn.init.zeros_(self.tail.weight)
        torch.nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x (1, C, h, w) -> (1, 3, *size): the residual on the upsampled first three channels."""
        residual = self.tail(self.body(self.head(x)))
        if residual.shape[-2:] != size:
            residual = F.interpolate(residual, size=size, mode="bilinear", align_corners=False)
        base = x[:, :3]
        if base.shape[-2:] != size:
            base = F.interpolate(base, size=size, mode="bilinear", align_corners=False)
        return base + residual


@SCREEN.register("gha_sr")
class GHASuperResolution(ScreenComponent):
    """GHA's super-resolution CNN after rasterization, with GHA's perceptual and low-resolution losses."""

    #: The first three rasterized channels are RGB in their own right (``lambda_lr`` holds them to
    #: the ground truth): export writes them as the splats' colour, without this stage.
    exports_feature_rgb = True

    @dataclass
    class Config(ComponentConfig):
        type: str = "gha_sr"
        scale: int = 4                   # paper: 512^2 features -> 2048^2 (a power of two: 1, 2, 4, 8)
        in_channels: int = 32            # the colour's channels (model.color.channels)
        hidden: int = 64                 # not in the paper
        lr: float = 1.0e-4               # paper: 1e-4 for Psi
        lambda_vgg: float = 0.1          # paper: 0.1
        lambda_lr: float = 1.0           # paper: 1
        lambda_lr_dssim: float = 0.0     # not GHA's (NPGA's raw-image D-SSIM)

        def validate(self, model, where: str) -> None:
            if self.scale not in (1, 2, 4, 8):
                raise InputFileError(f"{where}.scale must be 1, 2, 4 or 8, got {self.scale}")
            check_range(f"{where}.in_channels", self.in_channels, 3)
            check_range(f"{where}.hidden", self.hidden, 1)
            check_positive(f"{where}.lr", self.lr)
            check_range(f"{where}.lambda_vgg", self.lambda_vgg, 0.0)
            check_range(f"{where}.lambda_lr", self.lambda_lr, 0.0)
            check_range(f"{where}.lambda_lr_dssim", self.lambda_lr_dssim, 0.0)
            channels = getattr(model.color, "channels", None)
            if isinstance(channels, int) and channels != self.in_channels:
                raise InputFileError(f"{where}.in_channels ({self.in_channels}) must equal model.color.channels "
                                     f"({channels})")

    def __init__(self, cfg: Config, ctx):
        super().__init__(cfg, ctx)
        self.scale = cfg.scale
        self.cnn = SuperResolutionCNN(cfg.in_channels, cfg.hidden, cfg.scale)
        # The perceptual network: frozen, loaded for training only (set_step), kept out of the
        # module tree so that it is neither a parameter nor in the checkpoint.
        object.__setattr__(self, "_vgg", None)

    def forward(self, features: torch.Tensor, alpha: torch.Tensor | None, width: int, height: int) -> torch.Tensor:
        """features (h, w, C) -> image (height, width, 3)."""
        return self.cnn(features.permute(2, 0, 1)[None], (height, width))[0].permute(1, 2, 0)

    def set_step(self, step: int | None, schedule_iterations: int) -> None:
        # A training (or training-time evaluation) frame: the perceptual loss's weights must be
        # there before the first step, not fail in the middle of it.
        if step is not None and self.cfg.lambda_vgg > 0 and self._vgg is None:
            try:
                vgg = LPIPS(net="vgg")
            except MissingFileError as exc:
                raise MissingFileError(f"model.screen gha_sr (lambda_vgg {self.cfg.lambda_vgg}) needs the VGG "
                                       f"weights: {exc}") from None
            object.__setattr__(self, "_vgg", vgg)

    def perceptual(self, image: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """() LPIPS-VGG distance of images (H, W, 3) in [0, 1] (0 for identical images)."""
        vgg = self._vgg
        if vgg is None:
            raise RuntimeError("gha_sr: the perceptual loss is used before set_step() of a training step loaded it")
        if vgg.lins[0].weight.device != image.device:
            vgg = vgg.to(image.device)
            object.__setattr__(self, "_vgg", vgg)
        return vgg(image.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], normalize=True)[0]

    def losses(self, ctx: LossContext) -> dict[str, torch.Tensor]:
        c, terms = self.cfg, {}
        h, w = ctx.features.shape[:2]
        if c.lambda_lr > 0 or c.lambda_lr_dssim > 0:
            raw, gt = ctx.features[..., :3], downsample(ctx.gt, h, w)
        if c.lambda_lr > 0:
            terms["gha_lowres_l1"] = c.lambda_lr * (raw - gt).abs().mean()
        if c.lambda_lr_dssim > 0:
            terms["gha_lowres_dssim"] = c.lambda_lr_dssim * photometric_loss(raw, gt, 1.0)[2]
        if c.lambda_vgg > 0:
            terms["gha_vgg"] = c.lambda_vgg * self.perceptual(ctx.image, ctx.gt)
        return terms

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.cnn.parameters()), "lr": self.cfg.lr, "name": "gha_sr"}]

    def checkpoint_entries(self) -> dict:
        return {"gha_sr": self.cnn.state_dict()}

    def load_checkpoint_entries(self, entries: dict, where: str = "") -> None:
        self.cnn.load_state_dict({k: v.float() for k, v in entries["gha_sr"].items()})
