"""Linear jaw-rotation bases (docs/DESIGN.md section 3.4, paper section 3.3).

FLAME's jaw is a rotation, not a linear blendshape. To give it feature lines anyway, pick K
representative jaw rotations (bases) from the *training* frames by farthest point sampling
on unit quaternions with d(q, q') = 1 - |q . q'| (sign-invariant, since q and -q are the same
rotation), starting from the identity; a frame's jaw lines are then blended with weights
beta_k = (1 - d_k) / sum_k (1 - d_k) = |q . q_k| / sum_k |q . q_k|.

Note on the weights (faithful to the paper, worth knowing): jaw rotations are small (well
under 0.5 rad), so every 1 - d_k = |cos(angle_k / 2)| is close to 1 and the weights stay close
to uniform (1/K); they vary by a few per cent between a closed and an open mouth. The MLP
downstream still sees that variation.
"""
from __future__ import annotations

from typing import Optional

import torch

from utils.rotations import axis_angle_to_quat, quat_normalize

__all__ = ["axis_angle_to_quat", "quat_distance", "farthest_point_jaw_bases", "jaw_weights"]


def quat_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise d = 1 - |a . b| between unit quaternions a (M, 4) and b (K, 4) -> (M, K) in [0, 1]."""
    return 1.0 - (a @ b.t()).abs().clamp(max=1.0)


def farthest_point_jaw_bases(
    jaw_poses: torch.Tensor, n_bases: int = 16, min_distance: float = 1e-9
) -> torch.Tensor:
    """Pick jaw bases by farthest point sampling.

    Args:
        jaw_poses: (T, 3) axis-angle jaw poses of the training timesteps (or (T, 4) wxyz
            quaternions).
        n_bases: K wanted (16).
        min_distance: a candidate this close (in d) to an already chosen basis counts as a
            duplicate.
    Returns:
        (K', 4) unit wxyz quaternions with w >= 0, K' <= n_bases. Row 0 is the identity (even
        if no training frame has a closed jaw: it anchors the neutral face). Each next row is
        the training rotation with the largest distance to its nearest chosen basis (ties:
        lowest index). Sampling stops early when every remaining rotation duplicates a chosen
        one: K' is then the number of distinct rotations (+ identity). Rather than padding with
        repeated bases (whose lines would receive split, redundant weights), pass
        ``pad_to=n_jaw_bases`` to :func:`jaw_weights`: the unused lines get weight 0 and stay
        at their zero init.
    """
    if n_bases < 1:
        raise ValueError("n_bases must be >= 1")
    jp = jaw_poses.detach().to(torch.float64).reshape(-1, jaw_poses.shape[-1])
    cand = quat_normalize(axis_angle_to_quat(jp) if jp.shape[-1] == 3 else jp)
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64, device=jp.device)
    chosen = [identity[0]]
    if cand.shape[0] > 0:
        nearest = quat_distance(cand, identity)[:, 0]  # (T,) distance to the nearest basis
        while len(chosen) < n_bases:
            best = int(torch.argmax(nearest))
            if float(nearest[best]) <= min_distance:
                break  # everything left duplicates a chosen basis
            q = cand[best]
            chosen.append(q)
            nearest = torch.minimum(nearest, quat_distance(cand, q[None])[:, 0])
    bases = torch.stack(chosen)
    bases = torch.where(bases[:, :1] < 0, -bases, bases)
    return bases.to(dtype=jaw_poses.dtype if jaw_poses.is_floating_point() else torch.float32)


JAW_WEIGHTINGS = ("paper", "idw")


def jaw_weights(
    jaw_pose: torch.Tensor, bases: torch.Tensor, pad_to: Optional[int] = None, eps: float = 1e-12,
    kind: str = "paper", power: float = 2.0,
) -> torch.Tensor:
    """Blend weights of the jaw bases for some frames.

    Args:
        jaw_pose: (B, 3) axis-angle jaw poses, or (B, 4) wxyz quaternions; (3,) / (4,) for one.
        bases: (K, 4) from :func:`farthest_point_jaw_bases`.
        pad_to: if given (>= K), zero columns are appended up to this width so the result
            matches FeatureLineBlendshapes(n_jaw_bases=pad_to).
        kind: "paper": beta_k = (1 - d_k) / sum_k (1 - d_k), nearly uniform for real jaw angles
            (module note); "idw": Shepard's inverse-distance weighting on the same distance,
            beta_k = d_k^-power / sum_j d_j^-power, which interpolates exactly (a pose equal to a
            basis gets weight 1 on it) and falls off with distance, so the jaw lines tell jaw
            states apart. d_k is clamped at ``eps``.
        power: the IDW exponent (2: the classic choice; larger is sharper).
    Returns:
        (B, K or pad_to) weights, rows summing to 1.
    """
    if kind not in JAW_WEIGHTINGS:
        raise ValueError(f"jaw weighting must be one of {', '.join(JAW_WEIGHTINGS)}, got {kind!r}")
    q = jaw_pose.reshape(-1, jaw_pose.shape[-1])
    q = quat_normalize(axis_angle_to_quat(q) if q.shape[-1] == 3 else q)
    b = quat_normalize(bases.to(dtype=q.dtype, device=q.device))
    d = quat_distance(q, b)  # (B, K) = 1 - |q . q_k|
    sim = 1.0 - d if kind == "paper" else d.clamp_min(eps) ** (-power)
    w = sim / sim.sum(dim=-1, keepdim=True).clamp_min(eps)
    if pad_to is not None:
        if pad_to < w.shape[-1]:
            raise ValueError(f"pad_to={pad_to} is smaller than the number of bases {w.shape[-1]}")
        w = torch.cat([w, w.new_zeros(w.shape[0], pad_to - w.shape[-1])], dim=-1)
    return w
