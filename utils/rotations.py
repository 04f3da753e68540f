"""Quaternion and rotation helpers.

Conventions (docs/CONTRACTS.md): quaternions are ``wxyz`` (scalar first), Hamilton product,
rotation matrices act on column vectors (``x_world = R @ x_local``). All functions accept
arbitrary leading batch dimensions ``...`` and are differentiable.
"""
from __future__ import annotations

import torch

__all__ = [
    "quat_normalize",
    "quat_conjugate",
    "quat_multiply",
    "quat_to_matrix",
    "matrix_to_quat",
    "axis_angle_to_quat",
]


def quat_normalize(q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` from any ``(..., 4)``.

    The norm is clamped at ``eps`` so a zero quaternion gives zeros, not NaN.
    """
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    """Conjugate ``(..., 4)`` wxyz: the inverse rotation for unit quaternions."""
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of ``(..., 4)`` wxyz quaternions (broadcasts).

    As rotations, ``a * b`` applies ``b`` first, then ``a`` (matches ``R(a) @ R(b)``).
    """
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` from wxyz quaternions ``(..., 4)``.

    The quaternion is normalised first, so unnormalised parameters (as stored per splat) are
    fine.
    """
    w, x, y, z = quat_normalize(q).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Unit wxyz quaternions ``(..., 4)`` with ``w >= 0`` from rotation matrices ``(..., 3, 3)``.

    Each of the four components can be recovered from the diagonal (4w^2 = 1 + tr, 4x^2 =
    1 + m00 - m11 - m22, ...) and the rest from off-diagonal sums/differences divided by it.
    Dividing by the *largest* of the four keeps the result accurate for every rotation
    (the classic trace-only formula breaks down near 180 degrees).
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2); clamp keeps sqrt real under round-off.
    sq = torch.stack(
        [
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    two_abs = torch.sqrt(sq.clamp_min(1e-12))  # 2|w|, 2|x|, 2|y|, 2|z|
    # Candidate quaternions (scaled by 4 * component), one per pivot component.
    cand = torch.stack(
        [
            torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )  # (..., 4 pivots, 4 components)
    cand = cand / (2.0 * two_abs[..., :, None])
    best = sq.argmax(dim=-1)  # (...,)
    idx = best[..., None, None].expand(best.shape + (1, 4))
    q = torch.gather(cand, -2, idx).squeeze(-2)
    # q and -q are the same rotation; pick w >= 0 so results are unique and comparable.
    q = torch.where(q[..., :1] < 0, -q, q)
    return quat_normalize(q)


def axis_angle_to_quat(aa: torch.Tensor) -> torch.Tensor:
    """Unit wxyz quaternions ``(..., 4)`` from axis-angle vectors ``(..., 3)`` (radians).

    q = (cos(theta/2), sin(theta/2) * aa / theta). The factor sin(theta/2)/theta is replaced
    by its Taylor series 1/2 - theta^2/48 near zero so the zero rotation (very common for
    FLAME poses) has finite values and gradients.
    """
    theta2 = (aa * aa).sum(dim=-1, keepdim=True)
    theta = torch.sqrt(theta2.clamp_min(1e-24))
    small = theta2 < 1e-8
    safe_theta = torch.where(small, torch.ones_like(theta), theta)
    factor = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(0.5 * safe_theta) / safe_theta)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(0.5 * safe_theta))
    return torch.cat([w, aa * factor], dim=-1)
