"""Triplane colour (docs/DESIGN.md section 3.2, paper section 3.2).

Three axis-aligned feature planes over the canonical head's bounding box hold the neutral
appearance; a tiny MLP decodes [triplane feature, PE(canonical view direction)] into the
splat colour. This replaces the 48 SH numbers per splat.

Plane layout: each plane is a ``(1, C, R, R)`` image. For the plane named "AB" the *width*
(last) index runs along axis A and the *height* index along axis B, i.e. the feature at grid
node (i along A, j along B) is ``plane[0, :, j, i]``. That is what ``F.grid_sample`` expects
with grid[..., 0] = normalised A and grid[..., 1] = normalised B.

Colour convention: the decoder outputs the degree-0 SH coefficient ``f_dc (N, 3)`` (docs/DESIGN.md
section 3.2); the renderer colour is
``max(SH_C0 * f_dc + 0.5, 0)``, exactly what 3DGS/GA/gsplat do for SH degree 0 (see
:func:`sh_dc_to_rgb`). Why this and not a sigmoid: (a) the GA baseline's per-splat SH and the
triplane decoder then feed the renderer the same way, so the two configs differ only in where
f_dc comes from; (b) an unbounded, linear output keeps gradients alive for saturated colours
(white background, bright skin, dark hair), where a sigmoid flattens; (c) a zero output is
mid-grey, a neutral start.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from gaussian_renderer.sh import SH_C0
from utils.encoding import encoding_dim, positional_encoding

__all__ = [
    "SH_C0",
    "sh_dc_to_rgb",
    "rgb_to_sh_dc",
    "normalize_to_box",
    "as_vec3",
    "check_box",
    "Triplane",
    "ColorDecoder",
]



def sh_dc_to_rgb(f_dc: torch.Tensor) -> torch.Tensor:
    """Renderer colour ``(..., 3)`` from degree-0 SH coefficients ``(..., 3)``: max(C0 f + 0.5, 0)."""
    return (SH_C0 * f_dc + 0.5).clamp_min(0.0)


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`sh_dc_to_rgb` for colours >= 0: ``(rgb - 0.5) / C0``."""
    return (rgb - 0.5) / SH_C0


def normalize_to_box(points: torch.Tensor, bbox_min: torch.Tensor, bbox_max: torch.Tensor) -> torch.Tensor:
    """Map ``points (N, 3)`` linearly so the box maps to ``[-1, 1]^3`` (no clamping)."""
    extent = (bbox_max - bbox_min).clamp_min(1e-12)
    return 2.0 * (points - bbox_min) / extent - 1.0


def as_vec3(v, name: str) -> torch.Tensor:
    """(3,) float32 copy of a box corner given as a sequence, array or tensor."""
    t = torch.as_tensor(v).detach().to(torch.float32).reshape(-1).clone()
    if t.numel() != 3:
        raise ValueError(f"{name} must have 3 numbers, got shape {tuple(t.shape)}")
    return t


def check_box(bbox_min, bbox_max) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validated ``(min (3,), max (3,))`` float32 box; every side must have positive length."""
    lo, hi = as_vec3(bbox_min, "bbox_min"), as_vec3(bbox_max, "bbox_max")
    if not bool((hi > lo).all()):
        raise ValueError(f"bbox_max {hi.tolist()} must exceed bbox_min {lo.tolist()} on every axis")
    return lo, hi


class Triplane(nn.Module):
    """Three feature planes XY, XZ, YZ over a box in canonical space.

    Args:
        resolution: R, the side of each plane (grid nodes, corners included).
        channels: (C_xy, C_xz, C_yz); the frontal XY plane gets the most (paper: 32, 16, 16).
        bbox_min, bbox_max: (3,) corners of the canonical head box (stored as buffers, so they
            are saved in the state dict).
        init_std: std of the N(0, init_std^2) feature init.

    Init: N(0, 0.1^2). Features must start non-constant so that different splats feed the
    decoder different inputs from step one (constant planes give every splat the same colour
    and only the view direction to differ by). 0.1 is small enough that the decoder's first
    layer (PyTorch's default init) stays in its linear regime, and large compared with the
    first Adam steps at lr 2e-3 (each moves a feature by at most ~2e-3), so early updates
    refine rather than erase the spatial variation; the colour mostly comes from the MLP
    biases at the start and the grid takes over as it trains.
    """

    def __init__(
        self,
        resolution: int = 128,
        channels: Sequence[int] = (32, 16, 16),
        bbox_min=(-1.0, -1.0, -1.0),
        bbox_max=(1.0, 1.0, 1.0),
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError("channels must give (C_xy, C_xz, C_yz)")
        if resolution < 2:
            raise ValueError("resolution must be >= 2")
        self.resolution = int(resolution)
        self.channels = tuple(int(c) for c in channels)
        lo, hi = check_box(bbox_min, bbox_max)
        self.register_buffer("bbox_min", lo)
        self.register_buffer("bbox_max", hi)
        self.plane_xy = nn.Parameter(torch.randn(1, self.channels[0], resolution, resolution) * init_std)
        self.plane_xz = nn.Parameter(torch.randn(1, self.channels[1], resolution, resolution) * init_std)
        self.plane_yz = nn.Parameter(torch.randn(1, self.channels[2], resolution, resolution) * init_std)

    @property
    def out_features(self) -> int:
        """C_xy + C_xz + C_yz (64 with the paper's setting)."""
        return sum(self.channels)

    def planes(self):
        """The three parameters in output order (XY, XZ, YZ)."""
        return [self.plane_xy, self.plane_xz, self.plane_yz]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Bilinear triplane features at canonical positions.

        Args:
            points: (N, 3) canonical positions.
        Returns:
            (N, C_xy + C_xz + C_yz) features, concatenated in XY, XZ, YZ order.

        Coordinates are normalised so the box corners hit the corner grid nodes
        (align_corners=True). Points outside the box are clamped onto its surface, i.e. they
        take the border features; the clamp also zeroes their position gradient, so a drifting
        splat is not pulled by the grid.
        """
        u = normalize_to_box(points, self.bbox_min, self.bbox_max).clamp(-1.0, 1.0)
        return torch.cat([f[0] for f in self.plane_samples(u[None])], dim=-1)

    def plane_samples(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Bilinear samples of each plane at box coordinates, channel slice by channel slice.

        Args:
            u: (G, N, 3) points in box coordinates ([-1, 1]^3 is the box; :func:`normalize_to_box`),
                already clamped to it. Point set g samples the g-th of G equal channel slices of
                every plane (G = 1: all channels; the tilted triplane gives each of its rotated
                copies its own slice), so every plane's channel count must be a multiple of G.
        Returns:
            [XY, XZ, YZ] samples, each (G, N, C_plane / G).
        """
        g = u.shape[0]
        x, y, z = u[..., 0], u[..., 1], u[..., 2]
        feats = []
        for plane, (a, b) in zip(self.planes(), ((x, y), (x, z), (y, z))):
            grid = torch.stack([a, b], dim=-1)[:, None]  # (G, 1, N, 2): (width, height)
            sliced = plane.reshape(g, plane.shape[1] // g, *plane.shape[2:])  # (G, C / G, R, R)
            out = F.grid_sample(sliced, grid, mode="bilinear", padding_mode="border", align_corners=True)
            feats.append(out[:, :, 0, :].transpose(1, 2))  # (G, N, C / G)
        return feats


class ColorDecoder(nn.Module):
    """Tiny MLP: [triplane features, PE(canonical view dir)] -> degree-0 SH coefficient.

    Args:
        in_features: triplane feature width (64).
        view_pe_freqs: L frequencies in the view-direction encoding (input width 3 (1 + 2L)).
        hidden: hidden width (128).
    Architecture: Linear(in + 3(1 + 2L), hidden) -> ReLU -> Linear(hidden, 3), PyTorch default
    init. Output: f_dc (N, 3); renderer colour = :func:`sh_dc_to_rgb` (module docstring).
    """

    def __init__(self, in_features: int = 64, view_pe_freqs: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.view_pe_freqs = int(view_pe_freqs)
        view_dim = encoding_dim(3, self.view_pe_freqs, include_input=True)
        self.net = nn.Sequential(
            nn.Linear(in_features + view_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 3),
        )

    def forward(self, features: torch.Tensor, view_dirs_canonical: torch.Tensor) -> torch.Tensor:
        """Decode colours.

        Args:
            features: (N, in_features) triplane features.
            view_dirs_canonical: (N, 3) unit view directions in the canonical frame.
        Returns:
            (N, 3) SH DC coefficients f_dc.
        """
        pe = positional_encoding(view_dirs_canonical, self.view_pe_freqs, include_input=True)
        return self.net(torch.cat([features, pe], dim=-1))

    def rgb(self, features: torch.Tensor, view_dirs_canonical: torch.Tensor) -> torch.Tensor:
        """(N, 3) renderer colours max(C0 f_dc + 0.5, 0) (for backends that take RGB)."""
        return sh_dc_to_rgb(self.forward(features, view_dirs_canonical))
