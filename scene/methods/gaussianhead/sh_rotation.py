"""Rotating SH coefficients: the coefficients, in world space, of a colour given in the head's frame.

A colour c(d) = sum_j a_j Y_j(d) of directions d in the head's (canonical) frame, seen in a world
rotated by R, is c_w(d_w) = c(R^T d_w). Each SH band is closed under rotation, so c_w is again SH
of the same degree, with coefficients M a; M (K, K) is fitted exactly (least squares, block
diagonal by band) from the basis at a fixed set of directions: Y(D) M = Y(D R).
"""
from __future__ import annotations

import torch

from gaussian_renderer.sh import sh_basis

__all__ = ["fit_directions", "sh_rotation", "rotate_sh"]


def fit_directions(n: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3) float64 unit directions, random but fixed (enough, and spread enough, that the
    degree-3 basis at them has full rank 16)."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)


def sh_rotation(degree: int, R: torch.Tensor, dirs: torch.Tensor, basis_pinv: torch.Tensor) -> torch.Tensor:
    """(K, K) M with world coefficients = M @ head-frame coefficients, for the rotation ``R`` (3, 3)
    from the head's frame to the world; ``dirs`` (D, 3) and ``basis_pinv`` (K, D) = pinv(Y(dirs))."""
    return basis_pinv.to(R.dtype) @ sh_basis(degree, dirs.to(R.dtype) @ R)


def rotate_sh(sh: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """(N, K, 3) coefficients in the head's frame -> (N, K, 3) in the world (``M`` from :func:`sh_rotation`)."""
    return torch.einsum("kj,njc->nkc", M.to(sh.dtype), sh)
