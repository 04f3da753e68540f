"""Camera conventions: NeRSemble/GaussianAvatars (OpenGL camera-to-world) -> OpenCV world-to-camera.

Conventions used throughout the project (docs/CONTRACTS.md):

* ``viewmat (4, 4)``: OpenCV **world-to-camera** matrix. Camera axes: x right, y down, z forward
  (into the scene), so a point in front of the camera has camera-space z > 0.
* NeRSemble's ``transform_matrix`` is an OpenGL/Blender **camera-to-world** matrix: camera axes
  x right, y up, z backward (the camera looks along -z). Converting: flip the camera's y and z
  axes, i.e. negate columns 1 and 2 of the rotation part of c2w, then invert.
* ``K (3, 3)``: pixel intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` mapping camera
  coordinates to *continuous* pixel coordinates in which pixel ``(i, j)`` (column, row) covers
  ``[i, i+1) x [j, j+1)`` and has its centre at ``(i + 0.5, j + 0.5)`` (the 3DGS / gsplat
  convention; NeRSemble's ``cx ~ w / 2`` is in this frame). ``fl_x, fl_y, cx, cy`` are taken
  exactly as exported. Resizing an image by ``sx = new_w / w`` (and ``sy = new_h / h``) maps a
  continuous coordinate ``u`` to ``sx * u`` exactly in this frame, so fx *and* cx scale by sx
  (no half-pixel shift is needed), fy and cy by sy.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

from utils.rotations import matrix_to_quat, quat_to_matrix

__all__ = [
    "opengl_c2w_to_opencv_w2c",
    "opencv_w2c_to_opengl_c2w",
    "camera_center_from_w2c",
    "intrinsics_matrix",
    "scale_intrinsics",
    "scaled_size",
    "focal_to_fov",
    "cameras_extent",
    "pinhole_camera",
    "camera_pose",
]

ArrayLike = Union[torch.Tensor, np.ndarray, list, tuple]


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def opengl_c2w_to_opencv_w2c(c2w: ArrayLike) -> torch.Tensor:
    """OpenGL camera-to-world ``(..., 4, 4)`` -> OpenCV world-to-camera ``(..., 4, 4)``.

    Negates columns 1 and 2 of the rotation part (camera y up -> down, z back -> forward), then
    inverts. The inverse is computed in float64 (a general matrix inverse, so a slightly
    non-orthonormal rotation is still inverted exactly).

    Args:
        c2w: tensor / array ``(..., 4, 4)``.
    Returns:
        Tensor ``(..., 4, 4)``: the dtype of a floating input tensor; float32 for numpy arrays,
        lists and integer tensors.
    """
    m = _as_tensor(c2w)
    if m.shape[-2:] != (4, 4):
        raise ValueError(f"expected a (..., 4, 4) camera-to-world matrix, got shape {tuple(m.shape)}")
    out_dtype = m.dtype if (isinstance(c2w, torch.Tensor) and m.is_floating_point()) else torch.float32
    m = m.to(torch.float64).clone()
    m[..., :3, 1:3] *= -1.0
    w2c = torch.linalg.inv(m)
    # The inverse of a [R t; 0 1] matrix has an exact [0 0 0 1] last row; remove round-off there.
    w2c[..., 3, :3] = 0.0
    w2c[..., 3, 3] = 1.0
    return w2c.to(out_dtype)


def opencv_w2c_to_opengl_c2w(w2c: ArrayLike) -> torch.Tensor:
    """Inverse of :func:`opengl_c2w_to_opencv_w2c`: OpenCV w2c ``(..., 4, 4)`` -> OpenGL c2w."""
    m = _as_tensor(w2c)
    out_dtype = m.dtype if (isinstance(w2c, torch.Tensor) and m.is_floating_point()) else torch.float32
    c2w = torch.linalg.inv(m.to(torch.float64))
    c2w[..., :3, 1:3] *= -1.0
    c2w[..., 3, :3] = 0.0
    c2w[..., 3, 3] = 1.0
    return c2w.to(out_dtype)


def camera_center_from_w2c(w2c: torch.Tensor) -> torch.Tensor:
    """World-space camera centre ``(..., 3)`` from a world-to-camera ``(..., 4, 4)``: -R^T t."""
    R = w2c[..., :3, :3]
    t = w2c[..., :3, 3:]
    return -(R.transpose(-1, -2) @ t)[..., 0]


def intrinsics_matrix(fl_x, fl_y, cx, cy) -> torch.Tensor:
    """Pixel intrinsics ``[[fl_x, 0, cx], [0, fl_y, cy], [0, 0, 1]]``.

    Args: scalars (-> ``(3, 3)``) or broadcastable tensors of shape ``(...)`` (-> ``(..., 3, 3)``).
    Returns: float32 tensor (or the floating dtype of tensor inputs).
    """
    vals = [v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64) for v in (fl_x, fl_y, cx, cy)]
    dtype = torch.float32
    for v in (fl_x, fl_y, cx, cy):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            dtype = v.dtype
            break
    fx, fy, ux, uy = torch.broadcast_tensors(*[v.to(torch.float64) for v in vals])
    zero = torch.zeros_like(fx)
    one = torch.ones_like(fx)
    K = torch.stack(
        [
            torch.stack([fx, zero, ux], dim=-1),
            torch.stack([zero, fy, uy], dim=-1),
            torch.stack([zero, zero, one], dim=-1),
        ],
        dim=-2,
    )
    return K.to(dtype)


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics for an image resized by ``sx`` horizontally and ``sy`` vertically.

    Row 0 (fx, skew, cx) is multiplied by sx and row 1 (fy, cy) by sy. Exact in the continuous
    pixel frame described in the module docstring (pixel centres at +0.5). ``K (..., 3, 3)``.
    """
    K = K.clone()
    K[..., 0, :] = K[..., 0, :] * sx
    K[..., 1, :] = K[..., 1, :] * sy
    return K


def scaled_size(w: int, h: int, resolution_scale: float) -> tuple:
    """``(new_w, new_h) = (round(w * s), round(h * s))`` (Python rounding, at least 1 pixel)."""
    return max(1, int(round(w * resolution_scale))), max(1, int(round(h * resolution_scale)))


def focal_to_fov(focal: float, pixels: float) -> float:
    """Full field of view in radians for a focal length and image extent, both in pixels."""
    return 2.0 * float(np.arctan(pixels / (2.0 * focal)))


def cameras_extent(centers: torch.Tensor, margin: float = 1.1) -> float:
    """GaussianAvatars' ``cameras_extent``: max distance of the camera centres ``(N, 3)`` from
    their mean, times ``margin``.

    Degenerate cases (no cameras, or all centres at one point) fall back to ``margin`` times the
    mean distance of the centres from the world origin (the head sits near the origin), or 1.0
    without cameras, so a learning rate scaled by the extent never collapses to 0.
    """
    if centers.numel() == 0:
        return 1.0
    c = centers.to(torch.float64).reshape(-1, 3)
    radius = float((c - c.mean(dim=0, keepdim=True)).norm(dim=-1).max())
    if radius < 1e-9:
        radius = float(c.norm(dim=-1).mean())
    if radius < 1e-9:
        return 1.0
    return radius * margin


def pinhole_camera(position: ArrayLike, wxyz: ArrayLike, fov_y: float, width: int, height: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV world-to-camera ``(4, 4)`` and centred pixel intrinsics ``(3, 3)`` (float32) of a
    camera placed in the world (a viewer's camera).

    Args:
        position: (3,) camera centre in world space.
        wxyz: (4,) orientation of the camera in the world: the quaternion of the camera-to-world
            rotation, OpenCV camera axes (x right, y down, z forward), as viser reports it.
        fov_y: vertical field of view in radians; square pixels, principal point at the centre.
    """
    R_wc = quat_to_matrix(_as_tensor(wxyz).to(torch.float64))
    eye = _as_tensor(position).to(torch.float64).reshape(3)
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3] = R_wc.T
    viewmat[:3, 3] = -R_wc.T @ eye
    focal = 0.5 * height / float(np.tan(0.5 * fov_y))
    return viewmat.float(), intrinsics_matrix(focal, focal, 0.5 * width, 0.5 * height)


def camera_pose(viewmat: ArrayLike, K: ArrayLike, height: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Inverse of :func:`pinhole_camera` for a dataset camera: its centre ``(3,)``, camera-to-world
    wxyz ``(4,)`` (float64 numpy arrays) and vertical field of view (radians) from the world-to-
    camera ``(4, 4)``, intrinsics ``(3, 3)`` and image height. An off-centre principal point is
    not representable and is dropped."""
    w2c = _as_tensor(viewmat).to(torch.float64)
    R_wc = w2c[:3, :3].T
    centre = camera_center_from_w2c(w2c)
    fov_y = focal_to_fov(float(_as_tensor(K)[1, 1]), height)
    return centre.numpy(), matrix_to_quat(R_wc).numpy(), fov_y
