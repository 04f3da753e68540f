"""Adaptive truncated opacity-offset penalty (docs/DESIGN.md section 3.6, paper section 3.4, Eq. 2).

The feature lines model opacity changes *relative to the neutral face*, so where the mesh
does not move, the offset should be zero. Per frame:

  1. each triangle's displacement |t| = |centroid(expression mesh) - centroid(canonical mesh)|,
     where the expression mesh has expression, jaw and eyes applied but no global rotation,
     neck or translation (head pose is not expression);
  2. a triangle is static when |t| <= tau (tau_face = 1 mm on the face region, tau_other =
     2 mm elsewhere);
  3. splats bound to static triangles pay w |delta| (w = weight_face or weight_other);
     splats on moving triangles pay nothing (the truncation).

"Adaptive" in the paper means the static set is re-identified every frame from that frame's
mesh motion, instead of a fixed mask or a penalty on all splats: a cheek that is static in a
neutral frame is free to change in a smile. This code refines it per region: the face, where
real expression detail lives, uses the tight 1 mm threshold and weight 1; elsewhere (scalp,
hair, neck, ears, teeth...) the looser 2 mm threshold with the larger weight 10 (the official
code's; the paper only says "larger") - the paper reports floaters around the hair and teeth
artifacts without the penalty, and nothing there should change appearance with expression.

Displacement choice: the centroid displacement (= the mean of the three vertex displacement
vectors) is the triangle's *translation*, the paper's t-bar; an in-place twist of a triangle
without translation is negligible on a FLAME face.

Normalisation: the penalty is averaged over *all* splats (static or not): sum_i w_i |delta_i|
/ N. So its scale does not jump when the static set changes from frame to frame, and with
lambda_op = 1 it is the mean per-splat logit offset on static regions, comparable with the
per-pixel L1 image loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PENALTY_FACE_REGIONS", "penalty_face_triangles", "static_triangle_weights", "truncated_opacity_penalty"]

#: FLAME mask regions whose triangles get the face threshold and weight (the rest: "other").
PENALTY_FACE_REGIONS = ("face", "eye_region", "lips")


@dataclass
class PenaltyConfig:
    enabled: bool = True
    lambda_opacity: float = 1.0
    tau_face: float = 1e-3
    tau_other: float = 2e-3
    weight_face: float = 1.0
    weight_other: float = 10.0  # off the face: the official code's weight


def penalty_face_triangles(face_masks: dict, num_faces: int) -> torch.Tensor:
    """(F,) bool: the triangles in :data:`PENALTY_FACE_REGIONS` of the FLAME region ``face_masks``
    (name -> (F,) bool; all False without masks)."""
    regions = [face_masks[r] for r in PENALTY_FACE_REGIONS if r in face_masks]
    if not regions:
        return torch.zeros(num_faces, dtype=torch.bool)
    return torch.stack(regions).any(0).cpu()


def static_triangle_weights(
    tri_displacement: torch.Tensor,
    face_region: torch.Tensor,
    tau_face: float = 1e-3,
    tau_other: float = 2e-3,
    weight_face: float = 1.0,
    weight_other: float = 10.0,
) -> torch.Tensor:
    """Per-triangle penalty weight for one frame.

    Args:
        tri_displacement: (F,) from :func:`scene.model.binding.triangle_displacements`.
        face_region: (F,) bool, True for face-region triangles.
        tau_face, tau_other: static thresholds (metres) on / off the face.
        weight_face, weight_other: weights of static triangles on / off the face.
    Returns:
        (F,) float: weight_face or weight_other where |t| <= tau (static), 0 where it moves.
    """
    face_region = face_region.to(device=tri_displacement.device, dtype=torch.bool)
    tau = torch.where(
        face_region,
        torch.as_tensor(tau_face, dtype=tri_displacement.dtype, device=tri_displacement.device),
        torch.as_tensor(tau_other, dtype=tri_displacement.dtype, device=tri_displacement.device),
    )
    weight = torch.where(face_region, weight_face, weight_other).to(tri_displacement.dtype)
    return torch.where(tri_displacement <= tau, weight, torch.zeros_like(weight))


def truncated_opacity_penalty(
    delta: torch.Tensor,
    binding: torch.Tensor,
    tri_displacement: torch.Tensor,
    face_region: torch.Tensor,
    tau_face: float = 1e-3,
    tau_other: float = 2e-3,
    weight_face: float = 1.0,
    weight_other: float = 10.0,
) -> torch.Tensor:
    """L_op for one frame (before lambda_op).

    Args:
        delta: (N,) opacity logit offsets (0 outside the feature-line box).
        binding: (N,) long triangle index per splat.
        tri_displacement: (F,) this frame's triangle displacements.
        face_region: (F,) bool face-region triangles.
        tau_*, weight_*: see :func:`static_triangle_weights`.
    Returns:
        scalar = sum_i w[binding_i] |delta_i| / N (mean over all splats; 0 when N = 0).
        Gradient flows to ``delta`` only; the weights are mesh-derived constants.
    """
    if delta.numel() == 0:
        return delta.sum()
    w_tri = static_triangle_weights(
        tri_displacement.detach(), face_region, tau_face, tau_other, weight_face, weight_other
    )
    w = w_tri.index_select(0, binding.to(device=w_tri.device, dtype=torch.long)).to(delta.dtype)
    return (w * delta.abs()).mean()
