"""Feature-line opacity blendshapes (docs/DESIGN.md section 3.3, paper section 3.3).

Every expression basis (first 80 FLAME expression components) and every jaw basis (16) owns
a triple of 1D feature lines (x, y, z axes; R samples x C channels). A frame's lines are the
coefficient-weighted sums; each splat reads its canonical x, y, z on the blended expression
lines and on the blended jaw lines (6 lookups, 6C features) and an MLP with two hidden layers of
128 (192 -> 128 -> 128 -> 1, as the paper describes it) turns them into an opacity offset in logit
space: opacity = sigmoid(o_canonical + delta).

Start state: lines are zero and delta is exactly 0, without stalling the decoder. With a
zero output layer (the obvious way to get delta = 0) the start is a saddle point: the lines'
gradient is proportional to the output weights, and the output weights' gradient varies across
splats only through the lines, so at first only a constant offset is learned (which the
penalty removes) and the lines grow late (demo schedule, training-time eval val / test PSNR:
33.46 / 34.36 dB with a zero output layer, 33.77 / 34.54 with this start). So the decoder
measures every hidden layer from its zero-feature activation instead,
h_k = ReLU(W_k h_{k-1} + b_k) - ReLU(b_k) with h_0 = f, and delta = W_out h_K + b_out: a
re-parameterised MLP (the next layer's bias absorbs each constant) with default-initialised
weights and b_out = 0. For f = 0 every h_k is exactly 0 in floating point (W_k 0 + b_k = b_k
exactly, whatever the batch size or summation order), so delta(0) = 0 exactly, and the first step
already sends a gradient to the lines.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from scene.methods.tensorial.triplane import check_box

__all__ = ["FeatureLineBlendshapes", "OpacityDecoder", "lookup_lines", "box_coordinates"]


def box_coordinates(
    points: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Box-relative coordinates ``t (N, 3)`` (0 at bbox_min, 1 at bbox_max) and the
    closed-box membership ``inside (N,)`` bool of ``points (N, 3)``."""
    t = (points - bbox_min) / (bbox_max - bbox_min).clamp_min(1e-12)
    inside = ((t >= 0) & (t <= 1)).all(dim=-1)
    return t, inside


def lookup_lines(
    lines: torch.Tensor, points: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation of 3 feature lines at the points' x, y, z.

    Args:
        lines: (3, C, R) lines for the x, y and z axes.
        points: (N, 3) canonical positions.
        bbox_min, bbox_max: (3,) box that the lines span; the first/last sample sits exactly on
            the box faces (align_corners=True), sample spacing (max - min) / (R - 1).
    Returns:
        features (N, 3C): [x-line features, y-line features, z-line features], zero for points
            outside the box;
        inside (N,) bool: the point lies in the closed box.
    """
    n_axes, C, R = lines.shape
    if n_axes != 3:
        raise ValueError(f"lines must be (3, C, R), got {tuple(lines.shape)}")
    t, inside = box_coordinates(points, bbox_min, bbox_max)
    pos = t.clamp(0.0, 1.0) * (R - 1)
    i0 = pos.detach().floor().long().clamp(0, R - 2)
    w = (pos - i0.to(pos.dtype)).clamp(0.0, 1.0)  # (N, 3) weight of the upper sample
    feats = []
    for a in range(3):
        line = lines[a]  # (C, R)
        lo = line.index_select(1, i0[:, a])  # (C, N)
        hi = line.index_select(1, i0[:, a] + 1)
        wa = w[:, a]
        feats.append((lo * (1.0 - wa) + hi * wa).t())  # (N, C)
    features = torch.cat(feats, dim=-1) * inside[:, None].to(lines.dtype)
    return features, inside


class OpacityDecoder(nn.Module):
    """MLP in -> hidden (x ``layers``, ReLU) -> 1: a logit-space opacity offset.

    Args:
        in_features: 6 C (192 for C = 32): 3 expression + 3 jaw lookups.
        hidden: 128.
        layers: hidden layers, 2 (the paper's 192 -> 128 -> 128 -> 1).
    Every hidden layer is measured from its zero-feature activation and the output bias starts
    at 0, so the offset for zero features (zero lines, a neutral frame) is exactly 0 at init
    while every weight passes gradient (module docstring).
    """

    def __init__(self, in_features: int = 192, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"the opacity decoder needs at least one hidden layer, got {layers}")
        # The plain MLP's layout (state dict net.0, net.2, ...); forward() applies it from the
        # zero-feature point.
        modules = []
        for k in range(layers):
            modules += [nn.Linear(in_features if k == 0 else hidden, hidden), nn.ReLU(inplace=True)]
        modules.append(nn.Linear(hidden, 1))
        self.net = nn.Sequential(*modules)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N, 1) opacity logit offsets."""
        h = features
        for layer in list(self.net)[:-1:2]:
            h = torch.relu(layer(h)) - torch.relu(layer.bias)
        return self.net[-1](h)


class FeatureLineBlendshapes(nn.Module):
    """Per-basis feature lines; the opacity decoder that reads them is the caller's
    (:class:`scene.methods.tensorial.opacity.FeatureLineOpacity` owns both).

    Args:
        n_expr_bases: expression bases (first FLAME expression components used), 80.
        n_jaw_bases: jaw rotation bases, 16 (see scene/methods/tensorial/jaw_bases.py).
        resolution: R samples per line, 64.
        channels: C per line, 32.
        bbox_min, bbox_max: (3,) box in canonical space the lines span (buffers).
    Parameters: expr_lines (n_expr_bases, 3, C, R), jaw_lines (n_jaw_bases, 3, C, R), zero
    at init.
    """

    def __init__(
        self,
        n_expr_bases: int = 80,
        n_jaw_bases: int = 16,
        resolution: int = 64,
        channels: int = 32,
        bbox_min=(-1.0, -1.0, -1.0),
        bbox_max=(1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        if resolution < 2:
            raise ValueError("resolution must be >= 2")
        self.n_expr_bases = int(n_expr_bases)
        self.n_jaw_bases = int(n_jaw_bases)
        self.resolution = int(resolution)
        self.channels = int(channels)
        lo, hi = check_box(bbox_min, bbox_max)
        self.register_buffer("bbox_min", lo)
        self.register_buffer("bbox_max", hi)
        self.expr_lines = nn.Parameter(torch.zeros(self.n_expr_bases, 3, self.channels, self.resolution))
        self.jaw_lines = nn.Parameter(torch.zeros(self.n_jaw_bases, 3, self.channels, self.resolution))

    @staticmethod
    def _coeffs(c: torch.Tensor, n: int, name: str) -> torch.Tensor:
        """Accept (n',) or (1, n') with n' >= n; return the first n as (n,)."""
        if c.dim() == 2:
            if c.shape[0] != 1:
                raise ValueError(f"{name}: one frame at a time, got shape {tuple(c.shape)}")
            c = c[0]
        if c.dim() != 1 or c.shape[0] < n:
            raise ValueError(f"{name} needs at least {n} coefficients, got shape {tuple(c.shape)}")
        return c[:n]

    def blend(self, expr: torch.Tensor, jaw_weights: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frame lines as coefficient-weighted sums.

        Args:
            expr: (n_expr,) or (1, n_expr) FLAME expression coefficients, n_expr >= n_expr_bases;
                only the first n_expr_bases are used.
            jaw_weights: (n_jaw_bases,) or (1, n_jaw_bases), from scene.methods.tensorial.jaw_bases.jaw_weights.
        Returns:
            expr_lines_blended (3, C, R) = sum_i expr_i L_i,
            jaw_lines_blended (3, C, R) = sum_k beta_k J_k.
        """
        e = self._coeffs(expr, self.n_expr_bases, "expr").to(self.expr_lines.dtype)
        j = self._coeffs(jaw_weights, self.n_jaw_bases, "jaw_weights").to(self.jaw_lines.dtype)
        expr_blend = torch.einsum("i,iacr->acr", e, self.expr_lines)
        jaw_blend = torch.einsum("k,kacr->acr", j, self.jaw_lines)
        return expr_blend, jaw_blend

    def lookup(self, lines: torch.Tensor, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """:func:`lookup_lines` on this module's box: (3, C, R), (N, 3) -> (N, 3C), inside (N,)."""
        return lookup_lines(lines, points, self.bbox_min, self.bbox_max)

    def forward(
        self,
        points: torch.Tensor,
        expr: torch.Tensor,
        jaw_weights: torch.Tensor,
        decoder: nn.Module,
    ) -> torch.Tensor:
        """Opacity logit offsets for one frame.

        Args:
            points: (N, 3) canonical splat positions.
            expr: (n_expr,) or (1, n_expr) expression coefficients.
            jaw_weights: (n_jaw_bases,) or (1, n_jaw_bases).
            decoder: the (N, 6C) -> (N, 1) opacity decoder (:class:`OpacityDecoder`).
        Returns:
            delta (N,), exactly 0 (and no gradient) for splats outside the box.
        """
        expr_blend, jaw_blend = self.blend(expr, jaw_weights)
        f_expr, inside = self.lookup(expr_blend, points)
        f_jaw, _ = self.lookup(jaw_blend, points)
        # Every splat goes through the decoder and the outside ones are masked afterwards: selecting
        # the inside ones first (nonzero) would stop the GPU for a host round trip every frame.
        delta = decoder(torch.cat([f_expr, f_jaw], dim=-1))[:, 0]
        return torch.where(inside, delta, torch.zeros_like(delta))
