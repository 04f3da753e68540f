"""EWA projection of 3D Gaussians to screen-space ellipses (plain differentiable torch ops).

Conventions (shared with the gsplat backend, "classic" mode):

* camera space: ``p_c = R p + t`` with ``viewmat = [[R, t], [0, 1]]`` (OpenCV: x right, y down,
  z forward); depth is ``z_c``;
* ``means2d = (fx x/z + cx, fy y/z + cy)`` in the pixel frame of ``K``; the centre of pixel
  ``(i, j)`` (column i, row j) is at ``(i + 0.5, j + 0.5)``; K's skew entry is ignored;
* 2D covariance ``J W Sigma W^T J^T + eps2d * I`` (EWA, with the 0.3 px low-pass filter), where the
  Jacobian of the perspective map is evaluated at the camera-space mean with ``x/z`` and ``y/z``
  clamped to the view frustum widened by 30% of the half field of view on each side
  (``-cx/fx - 0.3 tan_fovx <= x/z <= (W - cx)/fx + 0.3 tan_fovx``, ``tan_fovx = W / (2 fx)``; for a
  centred principal point this is the ``1.3 tan(fov/2)`` limit of 3DGS), which keeps splats near
  the image border or behind the frustum edges from exploding;
* ``conics`` = upper triangle ``(a, b, c)`` of the inverse 2D covariance;
* screen extent: a splat of opacity ``o`` can only reach ``alpha >= 1/255`` where its Mahalanobis
  distance satisfies ``d^2 <= 2 ln(255 o)``; the per-axis half extents are
  ``r_x = ceil(e sqrt(cov_xx))``, ``r_y = ceil(e sqrt(cov_yy))`` with
  ``e = min(3.33, sqrt(2 ln(255 o)))`` (opacity-aware bounding box, as gsplat >= 1.5). Since
  ``o <= 1`` gives ``e < 3.33``, the box contains *every* pixel the splat can affect, so the tile
  binning never truncates a splat;
* a splat is visible when ``near <= z <= far``, ``o > 1/255``, its 2D covariance is positive
  definite and its box overlaps the image. ``radii = max(r_x, r_y)`` for visible splats, else 0.
"""
from __future__ import annotations

import torch

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTENT_SIGMAS = 3.33


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space covariances ``R diag(s)^2 R^T`` (N, 3, 3) from wxyz quaternions (N, 4, any norm)
    and activated scales (N, 3)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
            2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
            2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))
    m = rot * scales.unsqueeze(-2)  # R @ diag(s)
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: torch.Tensor,
    covars: torch.Tensor,
    opacities: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
) -> dict:
    """Project N Gaussians into C cameras.

    Args:
        means (N, 3), covars (N, 3, 3), opacities (C, N) (only used, detached, for the extents),
        viewmats (C, 4, 4), Ks (C, 3, 3).
    Returns a dict of (C, N, ...) tensors: ``means2d`` (C, N, 2), ``conics`` (C, N, 3), ``depths``
    (C, N), ``radii_xy`` (C, N, 2) int32, ``radii`` (C, N) int32 and ``visible`` (C, N) bool.
    Invisible splats get finite, gradient-safe placeholder values (their radius is 0).
    """
    R = viewmats[:, :3, :3]  # (C, 3, 3)
    t = viewmats[:, :3, 3]  # (C, 3)
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C, N, 3)
    covars_c = torch.einsum("cij,njk,clk->cnil", R, covars, R)  # R Sigma R^T, (C, N, 3, 3)
    x, y, z = means_c.unbind(-1)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # (C, 1)
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    depth_ok = (z >= near_plane) & (z <= far_plane)
    one = torch.ones((), dtype=z.dtype, device=z.device)
    zs = torch.where(depth_ok, z, one)  # keep invisible splats finite (and their gradients 0)

    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_xp = (width - cx) / fx + 0.3 * tan_fovx
    lim_xn = cx / fx + 0.3 * tan_fovx
    lim_yp = (height - cy) / fy + 0.3 * tan_fovy
    lim_yn = cy / fy + 0.3 * tan_fovy
    xz = x / zs
    yz = y / zs
    tx = zs * torch.minimum(torch.maximum(xz, -lim_xn), lim_xp)
    ty = zs * torch.minimum(torch.maximum(yz, -lim_yn), lim_yp)
    zero = torch.zeros_like(zs)
    rz = 1.0 / zs
    J = torch.stack(
        [
            fx * rz, zero, -fx * tx * rz * rz,
            zero, fy * rz, -fy * ty * rz * rz,
        ],
        dim=-1,
    ).reshape(z.shape + (2, 3))
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_ok = det > 0
    det_s = torch.where(det_ok, det, one)
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)
    means2d = torch.stack([fx * xz + cx, fy * yz + cy], dim=-1)

    with torch.no_grad():
        o = opacities.detach()
        op_ok = o > ALPHA_THRESHOLD
        ext = torch.sqrt(2.0 * torch.log((o * 255.0).clamp_min(1.0))).clamp_max(MAX_EXTENT_SIGMAS)
        rx = torch.ceil(ext * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(ext * torch.sqrt(c.detach().clamp_min(0)))
        mx, my = means2d.detach().unbind(-1)
        in_image = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        visible = depth_ok & det_ok & op_ok & (rx > 0) & (ry > 0) & in_image
        visible &= torch.isfinite(mx) & torch.isfinite(my)
        radii_xy = torch.stack([rx, ry], dim=-1).masked_fill(~visible[..., None], 0)
        radii_xy = radii_xy.clamp_max(2.0**30).to(torch.int32)  # no int32 overflow for absurd sizes
        radii = radii_xy.amax(dim=-1)
    return {
        "means2d": means2d,
        "conics": conics,
        "depths": z,
        "radii_xy": radii_xy,
        "radii": radii,
        "visible": visible,
    }


def camera_centers(viewmats: torch.Tensor) -> torch.Tensor:
    """World-space camera centres ``-R^T t`` (C, 3) of world-to-camera matrices (differentiable)."""
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    return -torch.einsum("cji,cj->ci", R, t)


__all__ = ["quat_scale_to_covar", "project_gaussians", "camera_centers", "ALPHA_THRESHOLD"]
