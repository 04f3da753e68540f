"""GaussianHead's tilted triplane: each Gaussian looks the planes up under K rotations of its own.

For a point p in the canonical head box, u = the box coordinates of p ([-1, 1]^3 is the box,
:func:`normalize_to_box`), and K unit quaternions q_1..q_K of that Gaussian:

    u_k = clamp(R(q_k) u, -1, 1)                                 (the k-th tilted copy)
    f_k = XY_k(u_k) * XZ_k(u_k) * YZ_k(u_k)                       (Hadamard product, C / K channels)
    f   = [f_1, ..., f_K]                                         (concatenated, C channels)

where XY_k is the k-th of K equal channel slices of the XY plane (C channels), bilinearly sampled
at (u_x, u_y) as the flagship's :class:`Triplane` samples it (its :meth:`Triplane.plane_samples`
is the one lookup both use). The rotations turn about the box centre in box coordinates; a tilted
point that leaves the box takes the border's features, as an untilted one does. At identity
rotations f is the channel-wise product of an untilted triplane's three samples.
"""
from __future__ import annotations

import torch

from scene.methods.tensorial.triplane import Triplane, normalize_to_box
from utils.rotations import quat_to_matrix

__all__ = ["TiltedTriplane", "tilt_quaternions", "IDENTITY"]

#: The identity rotation as a wxyz quaternion.
IDENTITY = (1.0, 0.0, 0.0, 0.0)


def tilt_quaternions(offsets: torch.Tensor) -> torch.Tensor:
    """(..., K, 4) wxyz quaternions (not normalised) from their stored offsets from the identity
    (..., K, 4): a splat's tilts are stored as ``q - identity`` so that they start at 0 like every
    per-splat tensor's constant start (Adam on the offset is Adam on q from the identity)."""
    return offsets + offsets.new_tensor(IDENTITY)


class TiltedTriplane(torch.nn.Module):
    """Three planes of ``channels`` channels over a box, looked up under ``rotations`` tilts.

    Args:
        resolution: R, the side of each plane; channels: C, each plane's channels (a multiple of
            ``rotations``); rotations: K; bbox_min, bbox_max: (3,) the box corners.
        init_std: the planes start at 1 + N(0, init_std^2): the product of three planes near 1
            keeps the features' scale (the flagship's zero-mean start would give products of
            size init_std^3), while the noise gives every place its own features from step one.
    """

    def __init__(self, resolution: int, channels: int, rotations: int, bbox_min, bbox_max, init_std: float = 0.1):
        super().__init__()
        if channels % rotations:
            raise ValueError(f"channels ({channels}) must be a multiple of rotations ({rotations})")
        self.rotations = int(rotations)
        self.triplane = Triplane(resolution, (channels,) * 3, bbox_min, bbox_max, init_std)
        with torch.no_grad():
            for plane in self.triplane.planes():
                plane.add_(1.0)

    @property
    def out_features(self) -> int:
        """C: K copies of C / K channels."""
        return self.triplane.channels[0]

    def forward(self, points: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
        """Tilted features (module docstring).

        Args:
            points: (N, 3) canonical positions.
            quats: (N, K, 4) wxyz quaternions of each point's tilts (normalised here).
        Returns:
            (N, C) features: copy k's C / K channels at [k C / K, (k + 1) C / K).
        """
        tp = self.triplane
        u = normalize_to_box(points, tp.bbox_min, tp.bbox_max)  # (N, 3)
        R = quat_to_matrix(quats)  # (N, K, 3, 3)
        tilted = torch.einsum("nkij,nj->kni", R, u).clamp(-1.0, 1.0)  # (K, N, 3)
        xy, xz, yz = tp.plane_samples(tilted)  # each (K, N, C / K)
        product = xy * xz * yz
        return product.transpose(0, 1).reshape(points.shape[0], -1)
