"""The small networks GHA's dynamic generator is made of: MLPs on a per-splat code and a frame code."""
from __future__ import annotations

import math

import torch

__all__ = ["fourier_features", "fourier_width", "MLP", "ConditionedMLP"]


def fourier_features(x: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """(N, D) -> (N, D (1 + 2 n_frequencies)): x, then sin and cos of 2^k pi x for k < n_frequencies."""
    if n_frequencies == 0:
        return x
    freqs = (2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)) * math.pi  # (K,)
    angles = (x[..., None] * freqs).flatten(-2)  # (N, D K)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], -1)


def fourier_width(d: int, n_frequencies: int) -> int:
    return d * (1 + 2 * n_frequencies)


class MLP(torch.nn.Module):
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear output (zero-initialised
    when ``zero_output``: the network starts at 0, i.e. no change from the neutral Gaussians)."""

    def __init__(self, d_in: int, hidden: int, layers: int, d_out: int, zero_output: bool = True):
        super().__init__()
        mods, width = [], d_in
        for _ in range(layers):
            mods += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
            width = hidden
        out = torch.nn.Linear(width, d_out)
        if zero_output:
            torch.nn.init.zeros_(out.weight)
            torch.nn.init.zeros_(out.bias)
        self.net = torch.nn.Sequential(*mods, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConditionedMLP(MLP):
    """f(a, c): an MLP of a per-splat code ``a`` (N, A) and one frame code ``c`` (K,) shared by all
    splats (GHA's f(X0, theta), f(F0, beta)): (N, A), (K,) -> (N, d_out)."""

    def __init__(self, d_splat: int, d_frame: int, hidden: int, layers: int, d_out: int, zero_output: bool = True):
        super().__init__(d_splat + d_frame, hidden, layers, d_out, zero_output)

    def forward(self, splat_code: torch.Tensor, frame_code: torch.Tensor) -> torch.Tensor:
        frame = frame_code.to(splat_code.dtype).reshape(1, -1).expand(splat_code.shape[0], -1)
        return self.net(torch.cat([splat_code, frame], -1))
