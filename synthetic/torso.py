"""A clothed torso below the neck: what real captures show and FLAME does not model.

NeRSemble frames show the shoulders and upper chest under the head (about a fifth of the image),
and the subject's foreground matte includes them. No FLAME-driven avatar explains that region: it
does not follow the FLAME parameters (the body stays put while the head turns on the neck) and no
FLAME triangle lies there, so full-frame metrics on real footage mix the head's quality with how a
method copes with an unmodelled, static region. This module builds such a torso for the synthetic
capture: a closed surface of rings from a collar around the base of the neck out to the shoulders,
its cross-section turning from a circle at the collar into a rounded rectangle at the shoulders,
fixed in world space. The camera framing that shows it moves the head to the upper part of the
image, as in NeRSemble (:data:`TORSO_TARGET_Y`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import anatomy as A

__all__ = ["Torso", "build_torso", "TORSO_TARGET_Y", "MATERIAL_CLOTH", "cloth_colour"]

#: Material id of the torso's faces (after the head template's skin, mouth, eye and teeth).
MATERIAL_CLOTH = 4
#: Height the cameras aim at when the torso is shown (the default rig aims at -0.01, the head's
#: centre): the head in the upper two thirds of the 550 x 802 frame, the shoulders below it.
TORSO_TARGET_Y = -0.065

_COLLAR_Y = A.NECK_BOTTOM_Y + 0.018      # top of the collar, inside the neck's lowest 2 cm
_BOTTOM_Y = -0.45                        # below every camera's field of view
_NECK_Z = -0.014                         # the neck cylinder's centre (head_surface._neck)
_RINGS, _SEGMENTS = 28, 48


@dataclass
class Torso:
    """World-space torso mesh.

    Attributes:
        vertices: (V, 3) float64 positions (static: the body does not follow the head).
        faces: (F, 3) int64, counter-clockwise seen from outside.
    """

    vertices: np.ndarray
    faces: np.ndarray


def _profile(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-widths (x, z) and superellipse exponent of the cross-section at heights ``y``: a collar
    a little wider than the neck (radius ~0.058 m) sloping over 9 cm to shoulders 0.19 m wide."""
    t = A.smoothstep(_COLLAR_Y - 0.005, _COLLAR_Y - 0.095, y)
    rx = 0.066 + t * (0.190 - 0.066)
    rz = 0.066 + t * (0.105 - 0.066)
    return rx, rz, 2.0 + 2.5 * t


def build_torso() -> Torso:
    """The torso: an inner collar ring (hidden inside the neck), then rings from the collar down
    past the bottom of every view, the bottom capped, faces outward."""
    ys = np.concatenate([[_COLLAR_Y], _COLLAR_Y - (_COLLAR_Y - _BOTTOM_Y) * np.linspace(0, 1, _RINGS) ** 1.6])
    theta = np.linspace(0.0, 2 * np.pi, _SEGMENTS, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    rings = []
    for i, y in enumerate(ys):
        if i == 0:  # the collar's inner edge, inside the neck so that no gap shows around it
            rx = rz = np.full(1, 0.045)
            power = np.full(1, 2.0)
        else:
            rx, rz, power = (np.atleast_1d(v) for v in _profile(np.array([y])))
        e = 2.0 / power
        x = rx * np.sign(c) * np.abs(c) ** e
        z = _NECK_Z + rz * np.sign(s) * np.abs(s) ** e
        rings.append(np.stack([x, np.full_like(x, y), z], -1))
    vertices = np.concatenate(rings + [np.array([[0.0, _BOTTOM_Y, _NECK_Z], [0.0, _COLLAR_Y, _NECK_Z]])])
    faces = []
    n = _SEGMENTS
    for r in range(len(ys) - 1):
        for k in range(n):
            a, b = r * n + k, r * n + (k + 1) % n
            a2, b2 = a + n, b + n
            # Ring r is above ring r + 1; theta grows from +x towards +z (the front).
            faces += [(a, b, a2), (b, b2, a2)]
    bottom, top, last = len(vertices) - 2, len(vertices) - 1, (len(ys) - 1) * n
    faces += [(last + k, last + (k + 1) % n, bottom) for k in range(n)]
    faces += [(k, top, (k + 1) % n) for k in range(n)]
    return Torso(vertices, np.asarray(faces, dtype=np.int64))


def cloth_colour(noise_seed: int) -> np.ndarray:
    """(3,) the identity's shirt colour, from its own generator (the identity's other draws stay as
    they were)."""
    rng = np.random.default_rng([int(noise_seed), 9001])
    palette = np.array([[0.18, 0.22, 0.32], [0.55, 0.12, 0.14], [0.20, 0.36, 0.24], [0.72, 0.70, 0.66],
                        [0.12, 0.12, 0.13], [0.36, 0.46, 0.62]])
    return np.clip(palette[rng.integers(len(palette))] * rng.uniform(0.9, 1.1, 3), 0.0, 1.0)
