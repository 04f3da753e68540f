"""A NeRSemble-like camera rig: 16 cameras on a 120-degree arc in front of the head at ~1 m.

Camera ``C // 2`` (8 of 16) looks straight at the face (the GaussianAvatars validation camera);
indices grow from the subject's right (-x) to the left (+x). Rows alternate slightly above and
below eye level with small jitter, like the two-tier NeRSemble rig. Full-resolution images are
550 x 802 with fl ~ 2048 px; a downscale factor f gives round(550/f) x round(802/f) images with
the intrinsics scaled by the actual size ratio.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CameraRig", "make_rig", "look_at_c2w_gl", "gl_to_cv_viewmat", "FULL_WIDTH", "FULL_HEIGHT",
           "FRONT_CAMERA"]

FULL_WIDTH, FULL_HEIGHT = 550, 802
FRONT_CAMERA = 8
ARC_DEGREES = 120.0


@dataclass
class CameraRig:
    """Calibrated cameras.

    Attributes:
        c2w: (C, 4, 4) float64 camera-to-world, OpenGL convention (x right, y up, z back).
        K_full: (C, 3, 3) float64 intrinsics at FULL_WIDTH x FULL_HEIGHT.
        camera_ids: C serial-number-like strings (NeRSemble style).
    """

    c2w: np.ndarray
    K_full: np.ndarray
    camera_ids: list

    @property
    def num_cameras(self) -> int:
        return int(self.c2w.shape[0])

    def image_size(self, downscale: int) -> tuple[int, int]:
        """(width, height) of images downscaled by ``downscale``."""
        return int(round(FULL_WIDTH / downscale)), int(round(FULL_HEIGHT / downscale))

    def intrinsics(self, downscale: int) -> np.ndarray:
        """(C, 3, 3) intrinsics for the downscaled images (scaled by the true size ratios)."""
        w, h = self.image_size(downscale)
        K = self.K_full.copy()
        K[:, 0] *= w / FULL_WIDTH
        K[:, 1] *= h / FULL_HEIGHT
        return K

    def viewmats(self) -> np.ndarray:
        """(C, 4, 4) OpenCV world-to-camera matrices."""
        return np.stack([gl_to_cv_viewmat(m) for m in self.c2w])


def look_at_c2w_gl(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0), roll: float = 0.0) -> np.ndarray:
    """Camera-to-world (OpenGL: camera looks along its -z, y up) for a camera at ``eye``."""
    fwd = np.asarray(target, float) - np.asarray(eye, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, fwd)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        right, true_up = c * right + s * true_up, -s * right + c * true_up
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, -fwd, eye
    return m


def gl_to_cv_viewmat(c2w_gl: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world -> OpenCV world-to-camera (negate the y and z camera axes, invert)."""
    c2w = c2w_gl.copy()
    c2w[:3, 1:3] *= -1.0
    return np.linalg.inv(c2w)


def make_rig(n_cameras: int = 16, seed: int = 0, target_y: float = -0.01) -> CameraRig:
    """Build the rig (deterministic for ``seed``).

    Args:
        n_cameras: number of cameras on the arc (camera ``n_cameras // 2`` is frontal).
        seed: jitter seed.
        target_y: height the cameras aim at (the head's centre; lower shows the shoulders,
            :data:`synthetic.torso.TORSO_TARGET_Y`).

    Returns:
        :class:`CameraRig`.
    """
    rng = np.random.default_rng([seed, 7001])
    step = ARC_DEGREES / max(n_cameras - 1, 1)
    front = n_cameras // 2
    c2w, K, ids = [], [], []
    for i in range(n_cameras):
        az = np.deg2rad((i - front) * step + rng.uniform(-1.0, 1.0) * (i != front))
        el = np.deg2rad((4.0 if i % 2 else -2.0) + rng.uniform(-1.5, 1.5) * (i != front))
        dist = 1.0 + rng.uniform(-0.03, 0.03)
        target = np.array([0.0, target_y, 0.0]) + rng.uniform(-0.008, 0.008, 3) * (i != front)
        eye = target + dist * np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
        c2w.append(look_at_c2w_gl(eye, target, roll=np.deg2rad(rng.uniform(-0.8, 0.8))))
        fl = 2048.0 * rng.uniform(0.985, 1.015)
        K.append([[fl, 0.0, FULL_WIDTH / 2 + rng.uniform(-3, 3)],
                  [0.0, fl * rng.uniform(0.998, 1.002), FULL_HEIGHT / 2 + rng.uniform(-3, 3)],
                  [0.0, 0.0, 1.0]])
        ids.append(f"{220700190 + 37 * i + int(rng.integers(0, 30))}")
    return CameraRig(c2w=np.stack(c2w), K_full=np.array(K), camera_ids=ids)
