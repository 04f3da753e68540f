"""The mouth-interior set Bm (GBS-style; docs/METHODS_GBS.md).

FLAME has no mouth interior; the teeth added to it (GaussianAvatars') are two rows of triangles,
the lower row skinned to the jaw. The mouth set is extra Gaussians placed uniformly inside the box
of the lower teeth's vertices (the tongue and the floor of the mouth behind the lips), each bound
to its nearest lower-teeth triangle: the geometry's nearest-point rule then gives it that
triangle's skinning weights, pure jaw, and FLAME's expression displacement there, zero (teeth do
not move with expression). Densification children inherit the binding, so they follow the jaw too.
"""
from __future__ import annotations

import torch

from scene.methods.gbs.nearest_point import nearest_barycentric

__all__ = ["lower_teeth_faces", "mouth_points", "nearest_faces"]


def lower_teeth_faces(faces: torch.Tensor, teeth: torch.Tensor, lbs_weights: torch.Tensor, jaw: int) -> torch.Tensor:
    """(T,) indices of the triangles whose three vertices are teeth (``teeth`` (V,) bool) skinned
    to the ``jaw`` joint alone (``lbs_weights`` (V, J))."""
    on_jaw = teeth & (lbs_weights[:, jaw] == 1.0)
    return torch.nonzero(on_jaw[faces].all(1)).squeeze(1)


def mouth_points(corners: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """(count, 3) points uniform in the axis-aligned box of ``corners`` (T, 3, 3), the lower teeth."""
    points = corners.reshape(-1, 3)
    lo, hi = points.min(0).values, points.max(0).values
    u = torch.rand(count, 3, generator=torch.Generator().manual_seed(seed), dtype=points.dtype)
    return lo + u * (hi - lo)


def nearest_faces(points: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """(P,) for each point (P, 3) the index into ``corners`` (T, 3, 3) of its nearest triangle."""
    a, b, c = (corners[None, :, i] for i in range(3))
    bary = nearest_barycentric(points[:, None], a, b, c)  # (P, T, 3)
    nearest = (bary[..., None] * corners[None]).sum(2)
    return (nearest - points[:, None]).norm(dim=-1).argmin(1)
