"""Real spherical harmonics up to degree 3, in the basis and sign convention of 3DGS.

The colour of a splat seen along the unit direction ``d = (x, y, z)`` (from the camera centre to
the splat mean) is ``sum_k Y_k(d) * coeffs[k] + 0.5``, clamped at 0 (done by the caller).
The constants are the normalisation factors of the real SH basis functions
(``Y_0^0 = 1 / (2 sqrt(pi))``, ``Y_1^m = sqrt(3 / (4 pi)) * {-y, z, -x}``, ...).
"""
from __future__ import annotations

import math

import torch

_C0 = 0.5 / math.sqrt(math.pi)
SH_C0 = _C0  # Y_0^0: a degree-0 coefficient f gives the colour max(SH_C0 f + 0.5, 0)
_C1 = math.sqrt(3.0 / (4.0 * math.pi))
_C2 = (
    0.5 * math.sqrt(15.0 / math.pi),   # xy
    -0.5 * math.sqrt(15.0 / math.pi),  # yz
    0.25 * math.sqrt(5.0 / math.pi),   # 2z^2 - x^2 - y^2
    -0.5 * math.sqrt(15.0 / math.pi),  # xz
    0.25 * math.sqrt(15.0 / math.pi),  # x^2 - y^2
)
_C3 = (
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),  # y (3x^2 - y^2)
    0.5 * math.sqrt(105.0 / math.pi),           # xyz
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),  # y (4z^2 - x^2 - y^2)
    0.25 * math.sqrt(7.0 / math.pi),            # z (2z^2 - 3x^2 - 3y^2)
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),  # x (4z^2 - x^2 - y^2)
    0.25 * math.sqrt(105.0 / math.pi),          # z (x^2 - y^2)
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),  # x (x^2 - 3y^2)
)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients of a degree: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """SH basis values ``(..., (degree+1)^2)`` for unit directions ``dirs (..., 3)``."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be 0, 1, 2 or 3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3.0 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4.0 * zz - xx - yy),
            _C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _C3[4] * x * (4.0 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate SH colours (no +0.5 offset, no clamp).

    Args:
        degree: 0..3; only the first (degree+1)^2 coefficients are used.
        coeffs: (..., K, 3) with K >= (degree+1)^2.
        dirs: (..., 3) view directions (normalised here).
    Returns:
        (..., 3)
    """
    n = num_sh_bases(degree)
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, d)  # (..., n)
    return (basis.unsqueeze(-1) * coeffs[..., :n, :]).sum(dim=-2)
