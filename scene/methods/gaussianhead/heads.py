"""GaussianHead's two decoders of a tilted-triplane feature: an opacity and geometry-feature head,
and an SH head of the geometry feature (the view direction enters through the SH's evaluation)."""
from __future__ import annotations

import torch

from gaussian_renderer.sh import num_sh_bases
from scene.methods.gha.networks import MLP

__all__ = ["OpacityFeatureHead", "SHHead"]


class OpacityFeatureHead(torch.nn.Module):
    """(N, C) tilted-triplane features -> opacity-logit shift (N,) and geometry feature (N, F):
    ``hidden_layers`` ReLU layers of ``hidden`` (GaussianHead: 32 -> 64 -> 64 -> 33, F = 32).
    The opacity output starts at 0 (the splats' own logit alone, 3DGS's 0.1 at first); the
    feature outputs keep PyTorch's default start, so the SH head sees varied features from step one."""

    def __init__(self, d_in: int, hidden: int, hidden_layers: int, feature_dim: int):
        super().__init__()
        self.mlp = MLP(d_in, hidden, hidden_layers, 1 + feature_dim, zero_output=False)
        with torch.no_grad():
            self.mlp.net[-1].weight[0].zero_()
            self.mlp.net[-1].bias[0].zero_()

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(features)
        return out[:, 0], out[:, 1:]


class SHHead(torch.nn.Module):
    """(N, F) geometry features -> (N, (degree + 1)^2, 3) SH coefficients (3DGS's basis and
    colour max(SH(d) + 0.5, 0)); zero at first (mid-grey)."""

    def __init__(self, feature_dim: int, hidden: int, hidden_layers: int, degree: int):
        super().__init__()
        self.bases = num_sh_bases(degree)
        self.mlp = MLP(feature_dim, hidden, hidden_layers, 3 * self.bases, zero_output=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).reshape(features.shape[0], self.bases, 3)
