"""FLAME's linear blend skinning applied to Gaussians (GBS-style; docs/METHODS_GBS.md).

A frame's joint transforms come from FLAME's own kinematic chain (:func:`flame_model.lbs.rigid_transforms`)
with the joints regressed from the canonical mesh plus the frame's expression (as FLAME does), and
the frame's pose (global rotation, neck, jaw, eyes). A Gaussian takes the skinning weights of its
nearest canonical surface point; its centre is moved by the weighted blend of the joint transforms
(exactly FLAME's skinning of a vertex, without FLAME's pose correctives), its rotation by the
weighted, renormalised blend of the joints' rotations as quaternions.
"""
from __future__ import annotations

import torch

from flame_model.lbs import axis_angle_to_matrix, rigid_transforms
from utils.rotations import matrix_to_quat, quat_normalize

__all__ = ["frame_pose", "joint_transforms", "skin_means", "blend_joint_rotations"]


def frame_pose(motion: dict) -> torch.Tensor:
    """(5, 3) axis-angle rotations of FLAME's joints (global, neck, jaw, left eye, right eye) from
    a frame's motion (rotation (3,), neck_pose (3,), jaw_pose (3,), eyes_pose (6,))."""
    return torch.cat([motion["rotation"], motion["neck_pose"], motion["jaw_pose"], motion["eyes_pose"]]).reshape(-1, 3)


def joint_transforms(joints: torch.Tensor, pose: torch.Tensor, parents) -> torch.Tensor:
    """(J, 3, 4) per-joint [R | t] mapping a rest-pose point x to R x + t.

    Args:
        joints: (J, 3) rest-pose joints (canonical joints plus the expression's joint offsets).
        pose: (J, 3) axis-angle rotation of each joint relative to its parent.
        parents: J parent indices (parents[0] = -1).
    """
    return rigid_transforms(axis_angle_to_matrix(pose)[None], joints[None], parents)[1][0]


def skin_means(means: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """(N, 3) rest-pose centres ``means`` moved by the blend of ``transforms`` (J, 3, 4) with
    per-Gaussian ``weights`` (N, J): sum_j w_j (R_j x + t_j), FLAME's skinning of a vertex."""
    blended = torch.einsum("nj,jab->nab", weights, transforms)  # (N, 3, 4)
    return torch.einsum("nab,nb->na", blended[..., :3], means) + blended[..., 3]


def blend_joint_rotations(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """(N, 4) unit wxyz rotations: per Gaussian the blend of the joints' rotations of
    ``transforms`` (J, 3, 4) with ``weights`` (N, J), normalize(sum_j w_j q_j), each q_j taken in
    the root's hemisphere so that a blend never averages a rotation with its own negative. A
    Gaussian's world rotation is this times its rest-pose rotation."""
    joint_q = matrix_to_quat(transforms[:, :, :3])  # (J, 4)
    sign = torch.where((joint_q * joint_q[:1]).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(joint_q.dtype)
    return quat_normalize(weights @ (joint_q * sign))
