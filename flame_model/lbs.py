"""Rodrigues' formula and linear blend skinning (LBS) with pose correctives, written from the
equations of SMPL/FLAME:

    v_shaped = T + S·beta (+ static offset)            (V, 3)
    J        = J_regressor @ v_shaped                  (K, 3)   K joints
    v_posed  = v_shaped + P·vec(R_1..R_{K-1} - I)      pose correctives, root excluded
    G_k      = G_parent(k) · [R_k | J_k - J_parent(k)]  world transform of joint k
    A_k      = G_k · [I | -J_k]                        maps rest-pose points to posed points
    v'       = sum_k w_vk A_k [v_posed; 1]

All functions are batched over a leading B, differentiable, and dtype/device agnostic.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["axis_angle_to_matrix", "blend_shapes", "rigid_transforms", "skin", "lbs"]

# Below this squared angle sin(t)/t and (1-cos t)/t^2 use their Taylor series: avoids 0/0 and
# gives finite gradients at exactly zero rotation (the most common pose).
_SMALL_ANGLE_SQ = 1e-12


def axis_angle_to_matrix(rvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula R = I + (sin t / t) K + ((1 - cos t) / t^2) K^2, K = [r]_x, t = |r|.

    Args:
        rvec: (..., 3) axis-angle vectors (radians).

    Returns:
        (..., 3, 3) rotation matrices.
    """
    theta_sq = (rvec * rvec).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # sqrt of a masked value keeps the unused branch (and its gradient) finite at theta = 0.
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    half = 0.5 * theta
    # (1 - cos t) / t^2 written as 0.5 * (sin(t/2) / (t/2))^2: no cancellation for small t.
    a = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24.0, 0.5 * (torch.sin(half) / half) ** 2)
    x, y, z = rvec.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rvec.dtype, device=rvec.device).expand_as(k)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def blend_shapes(coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Linear blend shapes.

    Args:
        coeffs: (B, C) coefficients.
        dirs: (V, 3, C) directions.

    Returns:
        (B, V, 3) offsets sum_c coeffs[b, c] * dirs[:, :, c].
    """
    return torch.einsum("bc,vdc->bvd", coeffs, dirs)


def rigid_transforms(rot_mats: torch.Tensor, joints: torch.Tensor, parents: Sequence[int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk the kinematic chain.

    Args:
        rot_mats: (B, K, 3, 3) local joint rotations.
        joints: (B, K, 3) rest-pose joint locations.
        parents: K parent indices, parents[0] = -1 and parents[k] < k (topological order).

    Returns:
        posed_joints: (B, K, 3) joint locations after posing.
        transforms: (B, K, 3, 4) per-joint [R | t] mapping a rest-pose point x to R x + t.
    """
    world_r: list[torch.Tensor] = []
    world_t: list[torch.Tensor] = []
    for k, p in enumerate(parents):
        if p < 0:
            world_r.append(rot_mats[:, k])
            world_t.append(joints[:, k])
        else:
            world_r.append(world_r[p] @ rot_mats[:, k])
            offset = (joints[:, k] - joints[:, p]).unsqueeze(-1)
            world_t.append((world_r[p] @ offset).squeeze(-1) + world_t[p])
    rot = torch.stack(world_r, dim=1)
    posed_joints = torch.stack(world_t, dim=1)
    # Remove the rest-pose joint location so the transform applies to rest-pose vertices.
    trans = posed_joints - (rot @ joints.unsqueeze(-1)).squeeze(-1)
    return posed_joints, torch.cat([rot, trans.unsqueeze(-1)], dim=-1)


def skin(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Blend per-joint rigid transforms per vertex.

    Args:
        vertices: (B, V, 3) rest-pose vertices (with pose correctives).
        weights: (V, K) skinning weights.
        transforms: (B, K, 3, 4) per-joint [R | t].

    Returns:
        (B, V, 3) skinned vertices.
    """
    blended = torch.einsum("vk,bkij->bvij", weights, transforms)  # (B, V, 3, 4)
    return torch.einsum("bvij,bvj->bvi", blended[..., :3], vertices) + blended[..., 3]


def lbs(v_shaped: torch.Tensor, pose: torch.Tensor, j_regressor: torch.Tensor, posedirs: torch.Tensor,
        parents: Sequence[int], weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear blend skinning with pose correctives.

    Args:
        v_shaped: (B, V, 3) template with shape/expression blend shapes (and static offset).
        pose: (B, K*3) axis-angle per joint, joint order of ``parents``.
        j_regressor: (K, V) joint regressor.
        posedirs: (V, 3, 9*(K-1)) pose-corrective directions.
        parents: K parent indices (see :func:`rigid_transforms`).
        weights: (V, K) skinning weights.

    Returns:
        vertices: (B, V, 3) posed vertices (no global translation).
        joints: (B, K, 3) posed joint locations.
    """
    batch = v_shaped.shape[0]
    num_joints = len(parents)
    joints = torch.einsum("kv,bvd->bkd", j_regressor, v_shaped)
    rot_mats = axis_angle_to_matrix(pose.reshape(batch, num_joints, 3))
    eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
    # The root rotation is excluded: pose correctives depend only on relative joint rotations.
    pose_feature = (rot_mats[:, 1:] - eye).reshape(batch, -1)
    v_posed = v_shaped + torch.einsum("bp,vdp->bvd", pose_feature, posedirs)
    posed_joints, transforms = rigid_transforms(rot_mats, joints, parents)
    return skin(v_posed, weights, transforms), posed_joints
