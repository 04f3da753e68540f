"""Shared landmark constants of the synthetic head (template coordinates, metres).

Frame: y up, the face looks along +z, x towards the subject's left (FLAME's convention), origin
near the centre of the head. Geometry, blendshapes, masks and the procedural albedo all refer to
these numbers, so the painted brows, lips and wrinkles line up with the shapes that move them.
"""
from __future__ import annotations

import numpy as np

# Rays from this point mesh the (star-shaped) head surface; it sits low so that the chin and the
# throat are both seen "from inside" without folds.
PARAM_CENTRE = np.array([0.0, -0.02, -0.005])

EYE_X = 0.031            # |x| of the eyeball centres
EYE_Y = 0.030            # y of the eyeball centres
EYE_RADIUS = 0.0125      # eyeball radius
EYE_OPEN_HALF_WIDTH = 0.0100   # half extents of the almond-shaped lid opening (approximate)
EYE_OPEN_HALF_HEIGHT = 0.0050
EYE_LID_RECESS = 0.0040  # how far the lid skin lies behind the eyeball front at the eye centre

BROW_Y = 0.047           # centre line of the eyebrows
MOUTH_Y = -0.045         # target height of the mouth slit (the actual slit row is the nearest)
MOUTH_HALF_WIDTH = 0.024  # |x| of the mouth corners (target)
NOSE_TIP = np.array([0.0, -0.010, 0.102])
NOSE_BRIDGE = np.array([0.0, 0.026, 0.086])
CHIN_Y = -0.090
HAIRLINE_Y = 0.088       # hairline height at the forehead centre

JAW_HINGE = np.array([0.0, -0.012, -0.002])   # where the jaw joint should end up
NECK_JOINT_Y = -0.075
ROOT_JOINT_Y = -0.135
NECK_BOTTOM_Y = -0.200

# Mouth pocket (dark interior behind the lips): depth behind the slit and heights above/below.
POCKET_DEPTH = 0.055
POCKET_UP = 0.013
POCKET_DOWN = 0.016


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (either order)."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gauss(p: np.ndarray, centre, sigma) -> np.ndarray:
    """Anisotropic Gaussian window exp(-|(p - c) / sigma|^2 / 2).

    Args:
        p: (..., D) points; centre, sigma: (D,) (a sigma of inf ignores that axis).

    Returns:
        (...,) weights in (0, 1].
    """
    q = (p - np.asarray(centre, dtype=np.float64)) / np.asarray(sigma, dtype=np.float64)
    return np.exp(-0.5 * (q * q).sum(-1))


def front_weight(p: np.ndarray, z0: float = 0.02, z1: float = 0.06) -> np.ndarray:
    """1 on the face side of the head (z > z1), 0 behind z0: keeps face deformations off the back."""
    return smoothstep(z0, z1, p[..., 2])
