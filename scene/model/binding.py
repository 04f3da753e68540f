"""Binding of splats to mesh triangles (docs/DESIGN.md section 3.1).

Each FLAME triangle (v0, v1, v2) defines a local frame:

    a0 = norm(v1 - v0)                 first edge direction
    a1 = norm(a0 x (v2 - v0))          triangle normal
    a2 = -norm(a1 x a0) (= a0 x a1)    in-plane, perpendicular to the first edge
    R  = [a0 a1 a2] (columns, det +1)
    k  = (|v1 - v0| + |a2 . (v2 - v0)|) / 2    mean of edge length and the height on it
    T  = (v0 + v1 + v2) / 3

A splat stores (mu', r', s') in its triangle's frame; in world space
mu = k R mu' + T, rotation = R r', scale = k exp(s').
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch

from utils.rotations import matrix_to_quat, quat_conjugate, quat_multiply, quat_normalize

__all__ = [
    "TriangleFrames",
    "triangle_frames",
    "local_to_world",
    "local_to_world_positions",
    "world_to_local",
    "triangle_displacements",
    "world_to_local_rotation_scale",
    "canonical_positions",
    "initial_local_params",
    "view_directions",
    "canonical_view_dirs",
]

_EPS = 1e-12


class TriangleFrames(NamedTuple):
    """Per-triangle frames; unpacks as ``rotations, scales, origins``.

    rotations: (..., F, 3, 3) columns [a0 a1 a2]; scales: (..., F); origins: (..., F, 3).
    """

    rotations: torch.Tensor
    scales: torch.Tensor
    origins: torch.Tensor


def _normalize(v: torch.Tensor, eps: float = _EPS) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(v / max(|v|, eps), |v|)`` for ``v (..., 3)``."""
    n = v.norm(dim=-1, keepdim=True)
    return v / n.clamp_min(eps), n


def _axis(like: torch.Tensor, i: int) -> torch.Tensor:
    """Unit axis ``i`` broadcast to ``like``'s (..., 3), made on its device from no host data (the
    render path's sync audit, tests/sync_audit.py, flags tensors built from Python values)."""
    return torch.eye(3, dtype=like.dtype, device=like.device)[i].expand_as(like)


def _any_perpendicular(a: torch.Tensor) -> torch.Tensor:
    """A unit vector perpendicular to unit ``a (..., 3)`` (used only for degenerate triangles)."""
    ex, ey = _axis(a, 0), _axis(a, 1)
    # Cross with whichever axis is least parallel to a, so the result is never ~0.
    use_y = a[..., :1].abs() > 0.9
    helper = torch.where(use_y, ey, ex)
    return _normalize(torch.cross(a, helper, dim=-1))[0]


def triangle_frames(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-10) -> TriangleFrames:
    """Local frames of all triangles.

    Args:
        verts: (..., V, 3) vertex positions (any leading batch dims).
        faces: (F, 3) long vertex indices.
        eps: below this length an edge/normal counts as degenerate.
    Returns:
        TriangleFrames(rotations (..., F, 3, 3), scales (..., F), origins (..., F, 3)).

    Degenerate triangles (repeated or collinear vertices, which real tracked meshes
    occasionally have after extreme expressions) get a valid orthonormal frame built from any
    direction perpendicular to the available edge instead of NaNs, and k >= 0.
    """
    faces = faces.to(device=verts.device, dtype=torch.long)
    v0 = verts[..., faces[:, 0], :]
    v1 = verts[..., faces[:, 1], :]
    v2 = verts[..., faces[:, 2], :]
    e1 = v1 - v0
    e2 = v2 - v0

    a0, len_e1 = _normalize(e1)
    a0 = torch.where(len_e1 > eps, a0, _axis(a0, 0))

    a1, len_n = _normalize(torch.cross(a0, e2, dim=-1))
    a1 = torch.where(len_n > eps, a1, _any_perpendicular(a0))
    a2 = -_normalize(torch.cross(a1, a0, dim=-1))[0]

    rotations = torch.stack([a0, a1, a2], dim=-1)  # columns
    scales = 0.5 * (len_e1[..., 0] + (a2 * e2).sum(-1).abs())
    origins = (v0 + v1 + v2) / 3.0
    return TriangleFrames(rotations, scales, origins)


def _gather(frames_field: torch.Tensor, binding: torch.Tensor, tail: int) -> torch.Tensor:
    """Index the triangle dimension (``-1 - tail``) of ``frames_field`` by ``binding``."""
    return frames_field.index_select(frames_field.dim() - 1 - tail, binding)


def local_to_world_positions(
    rotations: torch.Tensor,
    scales: torch.Tensor,
    origins: torch.Tensor,
    binding: torch.Tensor,
    xyz: torch.Tensor,
) -> torch.Tensor:
    """World positions ``mu = k R mu' + T``.

    Args:
        rotations (F, 3, 3), scales (F,), origins (F, 3): triangle frames (leading batch dims
            ``...`` allowed on all three).
        binding: (N,) long triangle index per splat.
        xyz: (N, 3) local positions mu'.
    Returns:
        (..., N, 3) world positions.
    """
    binding = binding.to(device=rotations.device, dtype=torch.long)
    R = _gather(rotations, binding, 2)
    k = _gather(scales, binding, 0)
    T = _gather(origins, binding, 1)
    return k[..., None] * torch.einsum("...nij,...nj->...ni", R, xyz) + T


def local_to_world(
    rotations: torch.Tensor,
    scales: torch.Tensor,
    origins: torch.Tensor,
    binding: torch.Tensor,
    xyz: torch.Tensor,
    quat: torch.Tensor,
    log_scale: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transform splats from their triangles' frames to world space.

    Args:
        rotations (F, 3, 3), scales (F,), origins (F, 3): from :func:`triangle_frames`
            (leading batch dims ``...`` allowed).
        binding: (N,) long triangle index of each splat.
        xyz: (N, 3) local positions mu'.
        quat: (N, 4) local rotations r', wxyz, need not be normalised.
        log_scale: (N, 3) local log-scales s'.
    Returns:
        means (..., N, 3) = k R mu' + T,
        quats (..., N, 4) wxyz unit, w >= 0 not guaranteed, = q(R) * r',
        scales (..., N, 3) = k exp(s').

    The frame rotations are converted to quaternions per *triangle* (F <= N, since pruning
    never empties a triangle), then one packed tensor is gathered by ``binding`` in a single
    index_select.
    """
    binding = binding.to(device=rotations.device, dtype=torch.long)
    batch = rotations.shape[:-3]
    n_faces = rotations.shape[-3]
    frame_q = matrix_to_quat(rotations)  # (..., F, 4)
    packed = torch.cat(
        [rotations.reshape(batch + (n_faces, 9)), frame_q, scales[..., None], origins], dim=-1
    )  # (..., F, 17)
    g = packed.index_select(packed.dim() - 2, binding)  # (..., N, 17)
    R = g[..., :9].reshape(g.shape[:-1] + (3, 3))
    q_frame = g[..., 9:13]
    k = g[..., 13:14]
    T = g[..., 14:17]

    means = k * torch.einsum("...nij,...nj->...ni", R, xyz) + T
    quats = quat_normalize(quat_multiply(q_frame, quat_normalize(quat)))
    world_scales = k * torch.exp(log_scale)
    return means, quats, world_scales


def world_to_local(
    rotations: torch.Tensor,
    scales: torch.Tensor,
    origins: torch.Tensor,
    binding: torch.Tensor,
    means: torch.Tensor,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Inverse of :func:`local_to_world_positions`: ``mu' = R^T (mu - T) / k``.

    Args:
        rotations (F, 3, 3), scales (F,), origins (F, 3): triangle frames (no batch dims).
        binding: (N,) long.
        means: (N, 3) world positions.
    Returns:
        (N, 3) local positions. Used when splitting: children are sampled in world space and
        stored back in their parent's triangle frame. ``k`` is clamped at ``eps``.
    """
    binding = binding.to(device=rotations.device, dtype=torch.long)
    R = _gather(rotations, binding, 2)
    k = _gather(scales, binding, 0).clamp_min(eps)
    T = _gather(origins, binding, 1)
    return torch.einsum("...nji,...nj->...ni", R, means - T) / k[..., None]


def world_to_local_rotation_scale(
    rotations: torch.Tensor,
    scales: torch.Tensor,
    binding: torch.Tensor,
    quats: torch.Tensor,
    world_scales: torch.Tensor,
    eps: float = 1e-12,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse of the rotation/scale part of :func:`local_to_world`.

    Args:
        rotations (F, 3, 3), scales (F,): triangle frames.
        binding: (N,) long.
        quats: (N, 4) world rotations wxyz.
        world_scales: (N, 3) world scales (> 0).
    Returns:
        local quats (N, 4) = q(R)^-1 * q (unit), local log-scales (N, 3) = log(s / k).
    """
    binding = binding.to(device=rotations.device, dtype=torch.long)
    q_frame = matrix_to_quat(_gather(rotations, binding, 2))
    k = _gather(scales, binding, 0).clamp_min(eps)
    local_q = quat_normalize(quat_multiply(quat_conjugate(q_frame), quat_normalize(quats)))
    log_s = torch.log(world_scales.clamp_min(eps) / k[..., None])
    return local_q, log_s


def canonical_positions(
    canonical_verts: torch.Tensor, faces: torch.Tensor, binding: torch.Tensor, xyz: torch.Tensor
) -> torch.Tensor:
    """Per-splat positions in the canonical (neutral) space.

    Args:
        canonical_verts: (V, 3) canonical mesh (shape + static offset, zero expression/pose).
        faces: (F, 3) long.
        binding: (N,) long.
        xyz: (N, 3) local positions.
    Returns:
        (N, 3) canonical positions, where the triplane and feature lines are looked up.
    """
    R, k, T = triangle_frames(canonical_verts, faces)
    return local_to_world_positions(R, k, T, binding, xyz)


def initial_local_params(
    n_faces: int, dtype=torch.float32, device=None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GA initialisation: one splat per triangle at its centroid, identity rotation, unit scale.

    Returns:
        binding (F,) long = arange(F), xyz (F, 3) zeros, quat (F, 4) = (1, 0, 0, 0),
        log_scale (F, 3) zeros (world scale = k, the triangle's size).
    """
    binding = torch.arange(n_faces, dtype=torch.long, device=device)
    xyz = torch.zeros(n_faces, 3, dtype=dtype, device=device)
    quat = torch.zeros(n_faces, 4, dtype=dtype, device=device)
    quat[:, 0] = 1.0
    log_scale = torch.zeros(n_faces, 3, dtype=dtype, device=device)
    return binding, xyz, quat, log_scale


def triangle_displacements(expression_verts: torch.Tensor, canonical_verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-triangle translation magnitude between a frame's expression mesh and the canonical mesh.

    Args:
        expression_verts: (..., V, 3) mesh with expression/jaw/eyes, no global pose.
        canonical_verts: (V, 3) canonical mesh (broadcast over ``...``).
        faces: (F, 3) long.
    Returns:
        (..., F) |centroid displacement| (same units as the vertices, metres for FLAME).
    """
    faces = faces.to(device=expression_verts.device, dtype=torch.long)
    disp = expression_verts - canonical_verts  # (..., V, 3)
    tri = disp[..., faces, :].mean(dim=-2)  # (..., F, 3)
    return tri.norm(dim=-1)


def view_directions(means: torch.Tensor, camera_center: torch.Tensor) -> torch.Tensor:
    """Unit directions ``(N, 3)`` from the camera centre ``(3,)`` to each splat ``means (N, 3)``."""
    return torch.nn.functional.normalize(means - camera_center.reshape(1, 3), dim=-1, eps=1e-12)


def canonical_view_dirs(
    view_dirs_world: torch.Tensor,
    R_canonical: torch.Tensor,
    R_deformed: torch.Tensor,
    binding: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate view directions from the deformed frame into the canonical one: v_c = R_c R_d^T v_d.

    The splat's triangle frame is the bridge: R_d^T takes the direction into the triangle's
    local frame, R_c back out into canonical space, so the decoder sees how the camera looks at
    the *surface*, independent of head pose and expression.

    Args:
        view_dirs_world: (N, 3) directions in the deformed (world) space.
        R_canonical: (N, 3, 3) canonical triangle rotations per splat, or (F, 3, 3) per
            triangle when ``binding`` is given.
        R_deformed: (N, 3, 3) or (F, 3, 3) likewise, for the current frame.
        binding: optional (N,) long; gathers per-triangle rotations.
    Returns:
        (N, 3) canonical view directions (norm preserved).
    """
    if binding is not None:
        binding = binding.to(device=R_canonical.device, dtype=torch.long)
        R_canonical = R_canonical.index_select(0, binding)
        R_deformed = R_deformed.index_select(0, binding)
    local = torch.einsum("nji,nj->ni", R_deformed, view_dirs_world)  # R_d^T v
    return torch.einsum("nij,nj->ni", R_canonical, local)
