"""The nearest point of a triangle to a point, as barycentric coordinates (plain PyTorch).

Written from the region tests of the closest-point-on-triangle construction (the point's
projection falls in the triangle's interior, beyond one edge, or beyond one corner): each region
has its own closed form, all are computed and the point's region selects one. Piecewise linear in
the point, so gradients flow within a region; degenerate triangles give a finite answer.
"""
from __future__ import annotations

import torch

__all__ = ["nearest_barycentric"]


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with den = 0 read as 1: the unused regions' zero denominators stay finite (and
    their gradients too, which torch.where would otherwise turn into NaN)."""
    return num / torch.where(den == 0, torch.ones_like(den), den)


def nearest_barycentric(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Barycentric coordinates of the point of triangle (a, b, c) nearest to ``p``.

    Args:
        p, a, b, c: (..., 3) points and triangle corners (broadcast together).
    Returns:
        (..., 3) weights (u, v, w) >= 0 summing to 1: the nearest point is u a + v b + w c.
    """
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    one, zero = torch.ones_like(d1), torch.zeros_like(d1)

    # The interior, then each region that overrides it, most specific last.
    v_in, w_in = _ratio(vb, va + vb + vc), _ratio(vc, va + vb + vc)
    out = torch.stack([1 - v_in - w_in, v_in, w_in], -1)
    t_bc = _ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    regions = [
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), torch.stack([zero, 1 - t_bc, t_bc], -1)),  # edge bc
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1 - _ratio(d2, d2 - d6), zero, _ratio(d2, d2 - d6)], -1)),
        ((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, one], -1)),  # corner c
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1 - _ratio(d1, d1 - d3), _ratio(d1, d1 - d3), zero], -1)),
        ((d3 >= 0) & (d4 <= d3), torch.stack([zero, one, zero], -1)),  # corner b
        ((d1 <= 0) & (d2 <= 0), torch.stack([one, zero, zero], -1)),  # corner a
    ]
    for inside, value in regions:
        out = torch.where(inside[..., None], value, out)
    return out
