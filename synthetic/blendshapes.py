"""Identity (shape), expression and pose-corrective directions of the synthetic head.

All directions are smooth displacement fields evaluated at the template vertices (metres per unit
coefficient), laid out as FLAME's ``shapedirs (V, 3, C)`` / ``posedirs (V, 3, 36)``. Fields are
functions of position only, so the two copies of a mouth-slit vertex always move together and the
closed mouth stays closed; eyeballs move rigidly (identity) or not at all (expression).

Expression components 0..7 have a meaning (:data:`EXPRESSION_NAMES`); the rest are random smooth
localised bumps on the face of decreasing magnitude. The appearance module keys its
expression-dependent wrinkles to the meaningful ones.
"""
from __future__ import annotations

import numpy as np

from . import anatomy as A
from .head_surface import PART_LEFT_EYE, PART_RIGHT_EYE, HeadTemplate

__all__ = ["EXPRESSION_NAMES", "BROW_RAISE", "SMILE", "BROW_FURROW", "LIP_PUCKER", "BLINK", "CHEEK_PUFF",
           "MOUTH_FROWN", "LIP_RAISE", "shape_basis", "expression_basis", "pose_correctives",
           "JAW_OPEN_FEATURE"]

EXPRESSION_NAMES = ("brow_raise", "smile", "brow_furrow", "lip_pucker", "blink", "cheek_puff", "mouth_frown",
                    "upper_lip_raise")
BROW_RAISE, SMILE, BROW_FURROW, LIP_PUCKER, BLINK, CHEEK_PUFF, MOUTH_FROWN, LIP_RAISE = range(8)

# posedirs column of the jaw's (R - I)[2, 1] entry (= sin of a jaw opening about x): FLAME's pose
# feature is vec(R_k - I) for joints 1..4 (neck, jaw, left eye, right eye), 9 entries each.
JAW_OPEN_FEATURE = 9 + 3 * 2 + 1

# Model-level seed: the head model (like FLAME) is one fixed model, independent of the dataset seed.
MODEL_SEED = 2023


def _eyeball_rows(template: HeadTemplate) -> list[np.ndarray]:
    return [np.nonzero(template.part == PART_LEFT_EYE)[0], np.nonzero(template.part == PART_RIGHT_EYE)[0]]


def _rigid_eyes(template: HeadTemplate, field, dirs: np.ndarray) -> None:
    """Overwrite eyeball rows of ``dirs`` (V, 3) with the field's value at the eye centre."""
    for rows, centre in zip(_eyeball_rows(template), template.eye_centres):
        dirs[rows] = field(centre[None])[0]


def _mirror(field):
    """Left/right symmetric version of a displacement field: (f(p) + M f(M p)) / 2, M flips x."""
    flip = np.array([-1.0, 1.0, 1.0])

    def sym(p: np.ndarray) -> np.ndarray:
        return 0.5 * (field(p) + field(p * flip) * flip)
    return sym


# ----------------------------------------------------------------------------- expression
def _expression_fields(template: HeadTemplate) -> list:
    """The 8 meaningful expression fields: callables (N, 3) -> (N, 3) displacements."""
    lm = template.landmarks
    my = lm["mouth_y"]
    corner_x = float(np.abs(lm["mouth_corners"][:, 0]).mean())

    def parts(p):
        x, y = p[:, 0], p[:, 1]
        return x, y, np.abs(x), np.sign(x), A.front_weight(p, 0.03, 0.07)

    def brow_raise(p):
        x, y, ax, sx, fr = parts(p)
        w = A.gauss(np.stack([ax, y], -1), (0.028, A.BROW_Y + 0.006), (0.028, 0.016)) * fr
        return np.stack([0 * x, 0.0065 * w, 0.0010 * w], -1)

    def smile(p):
        x, y, ax, sx, fr = parts(p)
        xy = np.stack([ax, y], -1)
        mouth = A.front_weight(p, 0.04, 0.07)
        wc = A.gauss(xy, (corner_x, my), (0.011, 0.009)) * mouth
        wk = A.gauss(xy, (0.038, my + 0.025), (0.013, 0.012)) * fr
        return np.stack([0.0035 * sx * wc, 0.0055 * wc + 0.0030 * wk, -0.0020 * wc + 0.0025 * wk], -1)

    def brow_furrow(p):
        x, y, ax, sx, fr = parts(p)
        w = A.gauss(np.stack([ax, y], -1), (0.014, A.BROW_Y), (0.012, 0.010)) * fr
        return np.stack([-0.0025 * sx * w, -0.0030 * w, 0.0015 * w], -1)

    def lip_pucker(p):
        x, y, ax, sx, fr = parts(p)
        w = A.gauss(np.stack([x, y], -1), (0.0, my), (0.020, 0.011)) * A.front_weight(p, 0.05, 0.08)
        return np.stack([-0.25 * x * w, 0 * x, 0.0070 * w], -1)

    def blink(p):
        x, y, ax, sx, fr = parts(p)
        out = np.zeros_like(p)
        for c in template.eye_centres:
            dx, dy = (p[:, 0] - c[0]) / 0.014, (p[:, 1] - c[1]) / 0.010
            w = np.exp(-((dx * dx + dy * dy) ** 3)) * fr
            # Stronger above the eye than below: the opening closes from the top down as the
            # coefficient grows, and is fully covered at 1.
            top_heavy = 1.1 + 0.5 * np.clip((p[:, 1] - c[1]) / 0.006, -1.0, 1.0)
            out[:, 2] += (A.EYE_LID_RECESS + 0.0008) * top_heavy * w
            out[:, 1] -= 0.0015 * w
        return out

    def cheek_puff(p):
        x, y, ax, sx, fr = parts(p)
        w = A.gauss(np.stack([ax, y], -1), (0.040, my + 0.008), (0.014, 0.014)) * A.front_weight(p, 0.0, 0.04)
        return np.stack([0.0045 * sx * w, 0 * x, 0.0040 * w], -1)

    def mouth_frown(p):
        x, y, ax, sx, fr = parts(p)
        xy = np.stack([ax, y], -1)
        mouth = A.front_weight(p, 0.04, 0.07)
        wc = A.gauss(xy, (corner_x, my), (0.010, 0.010)) * mouth
        wl = A.gauss(xy, (0.0, my - 0.008), (0.014, 0.006)) * mouth
        return np.stack([-0.0010 * sx * wc, -0.0045 * wc, 0.0015 * wl], -1)

    def upper_lip_raise(p):
        x, y, ax, sx, fr = parts(p)
        xy = np.stack([ax, y], -1)
        mouth = A.front_weight(p, 0.04, 0.07)
        wl = A.gauss(xy, (0.008, my + 0.006), (0.013, 0.006)) * mouth
        wn = A.gauss(xy, (0.0125, -0.015), (0.007, 0.007)) * mouth
        return np.stack([0 * x, 0.0030 * wl + 0.0025 * wn, 0.0010 * wl], -1)

    return [brow_raise, smile, brow_furrow, lip_pucker, blink, cheek_puff, mouth_frown, upper_lip_raise]


def expression_basis(template: HeadTemplate, n_expr: int = 100) -> np.ndarray:
    """Expression directions.

    Args:
        template: the template head.
        n_expr: number of components (>= 8).

    Returns:
        (V, 3, n_expr) float64; eyeball rows are zero.
    """
    p = template.vertices
    fields = _expression_fields(template)
    rng = np.random.default_rng(MODEL_SEED + 1)
    # Random bumps sit on face skin (front, between chin and forehead, away from the ears).
    face = np.nonzero((template.part <= 1) & (p[:, 2] > 0.045) & (p[:, 1] > -0.1) & (p[:, 1] < 0.075)
                      & (np.abs(p[:, 0]) < 0.055))[0]
    out = np.zeros((p.shape[0], 3, n_expr))
    for k in range(n_expr):
        if k < len(fields):
            field = fields[k]
        else:
            centre = p[rng.choice(face)]
            sigma = rng.uniform(0.008, 0.020)
            amp = 0.0030 * 0.965 ** (k - len(fields)) * rng.choice([-1.0, 1.0])
            # Mostly along the outward direction, with a random tangential part.
            normal = centre - A.PARAM_CENTRE
            normal /= np.linalg.norm(normal)
            direction = normal + 0.6 * rng.normal(size=3)
            direction /= np.linalg.norm(direction)

            def field(q, c=centre, s=sigma, a=amp, d=direction):
                return (a * A.gauss(q, c, (s, s, s)))[:, None] * d
            if rng.random() < 0.6:
                field = _mirror(field)
        out[:, :, k] = field(p)
    for rows in _eyeball_rows(template):
        out[rows] = 0.0
    return out


# ----------------------------------------------------------------------------- identity
def _shape_fields(template: HeadTemplate) -> list:
    """Meaningful identity fields (global proportions and facial features)."""
    centre = np.array([0.0, -0.02, 0.0])

    def scale(p):
        return 0.030 * (p - centre)

    def width(p):
        return 0.040 * (p - centre) * [1.0, 0.0, 0.0]

    def height(p):
        return 0.035 * (p - centre) * [0.0, 1.0, 0.0]

    def depth(p):
        return 0.035 * (p - centre) * [0.0, 0.0, 1.0]

    def nose(p):
        w = A.gauss(p, (0.0, -0.005, 0.098), (0.012, 0.020, 0.020))
        return w[:, None] * [0.0, -0.0020, 0.0045]

    def jaw_width(p):
        w = A.smoothstep(-0.02, -0.08, p[:, 1]) * A.smoothstep(-0.12, -0.09, p[:, 1]) * A.front_weight(p, -0.05, 0.03)
        return (0.0060 * w)[:, None] * np.stack([p[:, 0] / 0.06, 0 * w, 0 * w], -1)

    def chin(p):
        w = A.gauss(p, (0.0, -0.090, 0.075), (0.020, 0.015, 0.030))
        return w[:, None] * [0.0, -0.0020, 0.0050]

    def cheeks(p):
        w = A.gauss(np.stack([np.abs(p[:, 0]), p[:, 1]], -1), (0.045, -0.020), (0.016, 0.018)) * A.front_weight(p)
        return (0.0040 * w)[:, None] * np.stack([np.sign(p[:, 0]), 0 * w, 0.6 + 0 * w], -1)

    def eye_spacing(p):
        w = A.gauss(np.stack([np.abs(p[:, 0]), p[:, 1]], -1), (A.EYE_X, A.EYE_Y), (0.016, 0.013)) * A.front_weight(p)
        return (0.0025 * w)[:, None] * np.stack([np.sign(p[:, 0]), 0 * w, 0 * w], -1)

    def brow_ridge(p):
        w = A.gauss(np.stack([np.abs(p[:, 0]), p[:, 1]], -1), (0.022, A.BROW_Y), (0.025, 0.010)) * A.front_weight(p)
        return (0.0030 * w)[:, None] * [0.0, 0.0, 1.0]

    def lips(p):
        d = p[:, 1] - template.landmarks["mouth_y"]
        w = A.gauss(np.stack([p[:, 0], d], -1), (0.0, 0.0), (0.018, 0.008)) * A.front_weight(p, 0.05, 0.08)
        return (w * 0.0020)[:, None] * np.stack([0 * d, d / 0.008, 0.5 + 0 * d], -1)

    return [scale, width, height, depth, nose, jaw_width, chin, cheeks, eye_spacing, brow_ridge, lips]


def shape_basis(template: HeadTemplate, n_shape: int = 300) -> np.ndarray:
    """Identity directions: a few meaningful proportions, then random smooth fields.

    Args:
        template: the template head.
        n_shape: number of components.

    Returns:
        (V, 3, n_shape) float64; eyeballs translate rigidly with the field at their centre.
    """
    p = template.vertices
    fields = _shape_fields(template)
    rng = np.random.default_rng(MODEL_SEED + 2)
    skin = np.nonzero(template.part == 0)[0]
    out = np.zeros((p.shape[0], 3, n_shape))
    for k in range(n_shape):
        if k < len(fields):
            field = fields[k]
        else:
            centres = p[rng.choice(skin, size=3)]
            sigmas = rng.uniform(0.02, 0.05, size=3)
            vecs = rng.normal(size=(3, 3))
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            amp = 0.0030 * (1.0 + (k - len(fields)) / 8.0) ** -0.6

            def field(q, c=centres, s=sigmas, v=vecs, a=amp):
                return a * sum(A.gauss(q, c[i], (s[i],) * 3)[:, None] * v[i] for i in range(3))
            if rng.random() < 0.7:
                field = _mirror(field)
        d = field(p)
        _rigid_eyes(template, field, d)
        out[:, :, k] = d
    return out


# ----------------------------------------------------------------------------- pose correctives
def pose_correctives(template: HeadTemplate) -> np.ndarray:
    """Pose-corrective directions (V, 3, 36): only the jaw opening has one.

    When the jaw opens, the skin around the mouth corners is pulled in and back a little (the
    cheeks stretch) and the upper lip lifts, which plain skinning does not do.
    """
    p = template.vertices
    out = np.zeros((p.shape[0], 3, 36))
    ax, sx = np.abs(p[:, 0]), np.sign(p[:, 0])
    w = A.gauss(np.stack([ax, p[:, 1]], -1), (0.030, template.landmarks["mouth_y"] - 0.006), (0.012, 0.012))
    w = w * A.front_weight(p, 0.04, 0.07) * (template.part <= 1)
    out[:, 0, JAW_OPEN_FEATURE] = -0.012 * sx * w
    out[:, 2, JAW_OPEN_FEATURE] = -0.006 * w
    # The upper lip lifts a little so the upper teeth show in an open mouth (lower slit copies and
    # the lower half of the pocket excluded: they belong to the lower lip).
    my = template.landmarks["mouth_y"]
    upper = (template.lip_side == 1) | ((template.lip_side == 0) & (p[:, 1] >= my - 1e-9))
    upper &= ~((template.part == 1) & (template.pocket_t > np.pi))
    lift = np.exp(-0.5 * ((p[:, 1] - my) / 0.007) ** 2) * A.gauss(p[:, :1], (0.0,), (0.022,))
    out[:, 1, JAW_OPEN_FEATURE] += 0.018 * lift * upper * A.front_weight(p, 0.05, 0.08)
    return out
