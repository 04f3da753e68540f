"""Procedural appearance of the synthetic head: albedo, expression wrinkles and shading.

The albedo is a function of the *canonical* position (template coordinates, before identity,
expression and pose) interpolated per pixel, so texture detail is finer than the mesh and sticks to
the skin as it deforms. Per material:

* skin: tone with blotches and pore noise, redness on cheeks/nose/ears, lips, eyebrows, lash
  lines and eyelids, nostrils, optional stubble and a hair cap with strands;
* mouth interior: lip colour at the slit fading to a dark red-brown cavity with a tongue;
* eyeballs: sclera, iris with radial streaks and a limbal ring, pupil;
* teeth: off-white with gaps, gums towards the roots.

Expression-dependent detail that the geometry cannot explain (what the avatar's expression-
dependent opacity/colour must learn) multiplies the albedo: horizontal forehead wrinkles with the
brow-raise coefficient, vertical frown lines with brow furrow, nasolabial folds and mouth-corner
creases with smile and with jaw opening. Each grows smoothly with its coefficient.

Lighting (documented choice): one directional light plus ambient, *fixed in the head's frame*
(rotated by the global and neck rotations), so the shading moves with the head and a head turn
does not relight the face -- view-independent colour in the canonical frame stays learnable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import anatomy as A
from .blendshapes import BROW_FURROW, BROW_RAISE, SMILE
from .head_surface import MATERIAL_EYE, MATERIAL_MOUTH, MATERIAL_SKIN, MATERIAL_TEETH, HeadTemplate, skin_surface_grid
from .noise import fbm, value_noise
from .threads import single_threaded
from .torso import MATERIAL_CLOTH, cloth_colour

__all__ = ["IdentityLook", "sample_identity_look", "ExpressionState", "Appearance", "shade", "LIGHT_DIR_HEAD",
           "AMBIENT", "DIFFUSE", "wrinkle_ramp"]

# Light direction in the head frame (upper right of the image, in front), ambient and diffuse.
LIGHT_DIR_HEAD = (0.35, 0.55, 0.76)
AMBIENT, DIFFUSE = 0.50, 0.58

_SKIN_TONES = np.array([[0.94, 0.76, 0.64], [0.87, 0.66, 0.52], [0.76, 0.55, 0.41], [0.60, 0.42, 0.31],
                        [0.96, 0.80, 0.70], [0.82, 0.62, 0.50]])
_HAIR = np.array([[0.10, 0.07, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16], [0.62, 0.48, 0.28],
                  [0.40, 0.16, 0.08], [0.05, 0.05, 0.06]])
_IRIS = np.array([[0.30, 0.18, 0.09], [0.20, 0.35, 0.55], [0.28, 0.40, 0.25], [0.15, 0.10, 0.06]])


@dataclass
class IdentityLook:
    """Per-identity colours (RGB in [0, 1]) and pattern parameters."""

    skin: tuple
    hair: tuple
    brow: tuple
    lips: tuple
    iris: tuple
    stubble: float        # 0 (none) .. 1 (dark)
    hairline_shift: float  # metres, + raises the hairline
    noise_seed: int


def sample_identity_look(rng: np.random.Generator) -> IdentityLook:
    """Draw a plausible appearance (deterministic for the generator's state)."""
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.95, 1.03, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.15)
    lips = skin * np.array([0.88, 0.62, 0.62]) + np.array([0.04, 0.0, 0.01])
    iris = _IRIS[rng.integers(len(_IRIS))]
    stubble = float(rng.uniform(0.3, 0.8)) if rng.random() < 0.35 else 0.0
    tup = lambda a: tuple(float(v) for v in np.clip(a, 0.0, 1.0))  # noqa: E731
    return IdentityLook(skin=tup(skin), hair=tup(hair), brow=tup(hair * 0.7 + 0.02), lips=tup(lips), iris=tup(iris),
                        stubble=stubble, hairline_shift=float(rng.uniform(-0.006, 0.008)),
                        noise_seed=int(rng.integers(0, 2 ** 20)))


def wrinkle_ramp(value: float, start: float, full: float) -> float:
    """Smooth 0 -> 1 ramp of a coefficient (0 below ``start``, 1 above ``full``)."""
    return float(A.smoothstep(start, full, np.float64(value)))


@dataclass
class ExpressionState:
    """The per-frame scalars that drive expression-dependent appearance."""

    brow_raise: float = 0.0
    smile: float = 0.0
    brow_furrow: float = 0.0
    jaw_open: float = 0.0

    @classmethod
    def from_params(cls, expr, jaw_pose) -> "ExpressionState":
        """From FLAME ``expr (100,)`` and ``jaw_pose (3,)`` (opening = rotation about x)."""
        expr = np.asarray(expr, dtype=np.float64).reshape(-1)
        jaw = np.asarray(jaw_pose, dtype=np.float64).reshape(-1)
        return cls(brow_raise=float(expr[BROW_RAISE]), smile=float(expr[SMILE]),
                   brow_furrow=float(expr[BROW_FURROW]), jaw_open=float(jaw[0]))

    def intensities(self) -> dict:
        """Wrinkle intensities in [0, 1]."""
        crease = min(1.0, wrinkle_ramp(self.smile, 0.1, 1.5) + 0.8 * wrinkle_ramp(self.jaw_open, 0.04, 0.30))
        return {"forehead": wrinkle_ramp(self.brow_raise, 0.1, 1.5),
                "frown": wrinkle_ramp(self.brow_furrow, 0.1, 1.5),
                "crease": crease}


# ----------------------------------------------------------------------------- helpers (torch)
def _ss(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _g(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-0.5 * (x / sigma) ** 2)


def _mix(a: torch.Tensor, b, t: torch.Tensor) -> torch.Tensor:
    """Blend colours (N, 3) towards b ((3,) or (N, 3)) by t (N,)."""
    b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return a + (b - a) * t[:, None]


def _segment_distance(px: torch.Tensor, py: torch.Tensor, points: list) -> torch.Tensor:
    """Distance in the plane from (px, py) to a polyline given as [(x, y), ...]."""
    best = None
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = (((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0)
        d = torch.hypot(px - (x0 + t * dx), py - (y0 + t * dy))
        best = d if best is None else torch.minimum(best, d)
    return best


class Appearance:
    """Albedo of one identity's head, evaluated at canonical positions.

    Args:
        template: the template head (landmarks).
        teeth_middle_y: y of the teeth's middle row on the template (gums start away from it).
        look: the identity's colours.
        texture_size: (rows, columns) of the baked equirectangular skin texture.
    """

    def __init__(self, template: HeadTemplate, teeth_middle_y: float, look: IdentityLook,
                 texture_size: tuple[int, int] = (512, 1024)):
        self.look = look
        lm = template.landmarks
        self.mouth_y = float(lm["mouth_y"])
        self.mouth_z = float(lm["mouth_z"])
        self.corner_x = float(np.abs(lm["mouth_corners"][:, 0]).mean())
        self.eye_centres = torch.tensor(template.eye_centres, dtype=torch.float32)
        self.teeth_middle_y = float(teeth_middle_y)
        self._texture = self._bake(*texture_size)

    # ------------------------------------------------------------------ public
    def albedo(self, p: torch.Tensor, material: torch.Tensor, state: ExpressionState | None = None,
               wrinkles: bool = True) -> torch.Tensor:
        """Albedo at canonical positions.

        Skin comes from the baked texture (:meth:`skin_texture_lookup`), the small materials
        (mouth, eyes, teeth) are evaluated procedurally per sample.

        Args:
            p: (N, 3) canonical (template) positions.
            material: (N,) int64 material ids (MATERIAL_*).
            state: expression scalars of the frame (None = neutral).
            wrinkles: include the expression-dependent wrinkle darkening.

        Returns:
            (N, 3) float32 RGB in [0, 1].
        """
        p = p.to(torch.float32)
        out = torch.empty(p.shape[0], 3, dtype=torch.float32, device=p.device)
        sel = torch.nonzero(material == MATERIAL_SKIN, as_tuple=True)[0]
        if sel.numel():
            tex = self.skin_texture_lookup(p[sel])
            col = tex[:, :3]
            if wrinkles and state is not None:
                level = state.intensities()
                dark = (level["forehead"] * tex[:, 3] + level["frown"] * tex[:, 4] + level["crease"] * tex[:, 5])
                col = col * (1.0 - dark.clamp(0.0, 0.75))[:, None]
            out[sel] = col
        for mat, fn in ((MATERIAL_MOUTH, self._mouth), (MATERIAL_EYE, self._eye), (MATERIAL_TEETH, self._teeth),
                        (MATERIAL_CLOTH, self._cloth)):
            sel = torch.nonzero(material == mat, as_tuple=True)[0]
            if sel.numel():
                out[sel] = fn(p[sel])
        return out.clamp(0.0, 1.0)

    def skin_albedo(self, p: torch.Tensor, state: ExpressionState | None = None, wrinkles: bool = True) -> torch.Tensor:
        """Procedural skin albedo at canonical positions p (N, 3), evaluated exactly (no texture)."""
        col = self._skin(p.to(torch.float32))
        if wrinkles and state is not None:
            col = col * self.wrinkle_factor(p.to(torch.float32), state)[:, None]
        return col.clamp(0.0, 1.0)

    def wrinkle_maps(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) darkening patterns at full intensity: forehead lines, frown lines, creases."""
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        ax = x.abs()
        front = _ss(0.04, 0.07, z)
        # Forehead: horizontal lines arching down towards the temples, ~5 mm dark bands every 10.5 mm.
        yy = y + 0.006 * (x / 0.05) ** 2 + 0.0008 * torch.sin(x / 0.011)
        phase = (yy - (A.BROW_Y + 0.013)) / 0.0105
        band = _ss(0.25, 0.85, 0.5 + 0.5 * torch.cos(2 * math.pi * phase))
        window = (_ss(A.BROW_Y + 0.006, A.BROW_Y + 0.012, y) * (1.0 - _ss(A.HAIRLINE_Y - 0.012, A.HAIRLINE_Y - 0.004, y))
                  * (1.0 - _ss(0.040, 0.052, ax)) * front)
        forehead = 0.55 * band * window
        # Frown: two vertical lines between the brows.
        window = _ss(A.BROW_Y - 0.010, A.BROW_Y - 0.004, y) * (1.0 - _ss(A.BROW_Y + 0.012, A.BROW_Y + 0.020, y))
        frown = 0.55 * _g((ax - 0.0065).abs(), 0.0016) * window * front
        # Nasolabial folds and mouth-corner creases.
        my, cx = self.mouth_y, self.corner_x
        fold = _segment_distance(ax, y, [(0.0165, -0.012), (0.026, my + 0.012), (cx + 0.007, my - 0.002),
                                         (cx + 0.007, my - 0.012)])
        corner = _segment_distance(ax, y, [(cx + 0.0015, my + 0.003), (cx + 0.004, my - 0.004),
                                           (cx + 0.003, my - 0.016)])
        crease = (0.50 * _g(fold, 0.0018) + 0.40 * _g(corner, 0.0015)) * front
        return torch.stack([forehead, frown, crease], -1)

    def wrinkle_factor(self, p: torch.Tensor, state: ExpressionState) -> torch.Tensor:
        """(N,) multiplicative darkening (1 = none) of skin at canonical positions p (N, 3)."""
        level = state.intensities()
        maps = self.wrinkle_maps(p)
        dark = level["forehead"] * maps[:, 0] + level["frown"] * maps[:, 1] + level["crease"] * maps[:, 2]
        return 1.0 - dark.clamp(0.0, 0.75)

    # ------------------------------------------------------------------ baked skin texture
    @single_threaded
    def _bake(self, n_theta: int, n_phi: int) -> torch.Tensor:
        """(1, 6, n_theta, n_phi + 2) equirectangular texture: albedo RGB + 3 wrinkle maps.

        Skin is star-shaped around PARAM_CENTRE, so a direction identifies a skin point; baking
        once per identity makes per-pixel lookups cheap while keeping ~0.7 mm texels on the face.
        One column of padding on each side wraps the seam at the back of the head.
        """
        pts = torch.from_numpy(skin_surface_grid(n_theta, n_phi)).to(torch.float32).reshape(-1, 3)
        tex = torch.cat([self._skin(pts), self.wrinkle_maps(pts)], -1)
        tex = tex.reshape(n_theta, n_phi, 6).permute(2, 0, 1)
        tex = torch.cat([tex[:, :, -1:], tex, tex[:, :, :1]], dim=2)
        return tex[None].contiguous()

    def skin_texture_lookup(self, p: torch.Tensor) -> torch.Tensor:
        """Bilinear lookup of the baked skin texture at canonical positions p (N, 3) -> (N, 6)."""
        d = p - torch.tensor(A.PARAM_CENTRE, dtype=p.dtype, device=p.device)
        theta = torch.acos((d[:, 1] / d.norm(dim=-1).clamp_min(1e-12)).clamp(-1.0, 1.0))
        phi = torch.atan2(d[:, 0], d[:, 2])
        n_theta, n_phi = self._texture.shape[2], self._texture.shape[3] - 2
        gx = ((phi + math.pi) * n_phi / (2 * math.pi) + 1.0) / (n_phi + 2) * 2.0 - 1.0
        gy = theta / math.pi * 2.0 - 1.0
        grid = torch.stack([gx, gy], -1).view(1, 1, -1, 2)
        out = torch.nn.functional.grid_sample(self._texture.to(p.device), grid, mode="bilinear",
                                              padding_mode="border", align_corners=False)
        return out[0, :, 0].T

    # ------------------------------------------------------------------ materials
    def _skin(self, p: torch.Tensor) -> torch.Tensor:
        look = self.look
        seed = look.noise_seed
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        ax = x.abs()
        front = _ss(0.04, 0.07, z)
        n_mid = fbm(p, 45.0, octaves=2, seed=seed)
        pores = value_noise(p, 420.0, seed + 7)
        base = torch.tensor(look.skin, dtype=torch.float32, device=p.device)
        col = base * (0.92 + 0.16 * n_mid)[:, None] * (0.96 + 0.08 * pores)[:, None]
        # Redness: cheeks, nose tip, ears.
        red = (0.5 * _g(torch.hypot(ax - 0.042, y + 0.010), 0.013) * front
               + 0.4 * _g(torch.linalg.vector_norm(p - torch.tensor(A.NOSE_TIP, dtype=torch.float32), dim=-1), 0.010)
               + 0.35 * _ss(0.066, 0.08, ax) * _g(y - 0.004, 0.02))
        col = _mix(col, base * torch.tensor([1.0, 0.78, 0.76]), 0.5 * red)
        # Under the jaw and down the neck a little darker (ambient occlusion painted in).
        col = col * (1.0 - 0.16 * _ss(-0.085, -0.125, y) * (1.0 - _ss(-0.17, -0.20, y) * 0.3))[:, None]
        col = self._stubble(p, col)
        col = self._lips(p, col)
        col = self._eyes_skin(p, col)
        col = self._brows(p, col)
        # Nostrils.
        nostril = torch.exp(-0.5 * (((ax - 0.0070) / 0.0030) ** 2 + ((y + 0.0175) / 0.0020) ** 2)) * front
        col = col * (1.0 - 0.6 * nostril)[:, None]
        return self._hair(p, col)

    def _stubble(self, p: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        if self.look.stubble <= 0:
            return col
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        my = self.mouth_y
        region = (_ss(my + 0.022, my + 0.012, y) * _ss(-0.125, -0.105, y) * _ss(-0.01, 0.02, z)
                  * (1.0 - _g(torch.hypot(x, (y - my) * 1.6), 0.010)))
        grain = value_noise(p, 600.0, self.look.noise_seed + 31)
        return _mix(col, torch.tensor(self.look.hair) * 0.8, self.look.stubble * 0.45 * region * (0.6 + 0.4 * grain))

    def _lips(self, p: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        cx, my = self.corner_x + 0.001, self.mouth_y
        u = (x / cx).clamp(-1.0, 1.0)
        shape = (1.0 - u * u).clamp_min(0.0).sqrt()
        bow = 0.0012 * torch.cos(u * math.pi * 1.5) * (u.abs() < 0.6)     # Cupid's bow
        upper_h = 0.0068 * shape + bow
        lower_h = 0.0085 * shape ** 0.8
        d = torch.where(y >= my, (y - my) - upper_h, (my - y) - lower_h)  # < 0 inside the lips
        inside = _ss(0.0009, -0.0009, d) * _ss(self.mouth_z - 0.02, self.mouth_z - 0.008, z) * (x.abs() < cx + 0.002)
        lips = torch.tensor(self.look.lips, dtype=torch.float32, device=p.device)
        sheen = 0.9 + 0.2 * value_noise(p * torch.tensor([1.0, 4.0, 1.0]), 500.0, self.look.noise_seed + 3)
        return _mix(col, lips * sheen[:, None], inside)

    def _eye_local(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dx, dy) from the nearer eye centre in the x-y plane."""
        c = self.eye_centres.to(p.device)
        left = p[:, 0] >= 0
        cx = torch.where(left, c[0, 0], c[1, 0])
        return p[:, 0] - cx, p[:, 1] - c[0, 1]

    def _eyes_skin(self, p: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        dx, dy = self._eye_local(p)
        front = _ss(0.05, 0.07, p[:, 2])
        e = (dx / A.EYE_OPEN_HALF_WIDTH) ** 2 + (dy / A.EYE_OPEN_HALF_HEIGHT) ** 2
        # Lid skin (the part that covers the eye when it closes): a little darker and pinker.
        lid = _ss(1.15, 0.9, e) * front
        col = _mix(col, col * torch.tensor([0.86, 0.74, 0.74]), lid)
        # Lash lines along the rim of the opening, heavier on the upper lid; soft shadow around.
        rim = _g(e - 1.15, 0.35) * front
        upper = _ss(-0.001, 0.002, dy)
        col = col * (1.0 - (0.55 * upper + 0.25 * (1.0 - upper)) * rim)[:, None]
        socket = torch.exp(-0.5 * ((dx / 0.016) ** 2 + ((dy - 0.004) / 0.010) ** 2)) * front
        return col * (1.0 - 0.12 * socket)[:, None]

    def _brows(self, p: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        ax = x.abs()
        t = ((ax - 0.031) / 0.022)
        centre = A.BROW_Y + 0.003 - 0.004 * t * t
        thick = 0.0034 * (1.0 - 0.45 * ((ax - 0.022) / 0.03).clamp(-1, 1) ** 2)
        along = _ss(0.007, 0.011, ax) * (1.0 - _ss(0.050, 0.056, ax))
        inside = _ss(0.0008, -0.0008, (y - centre).abs() - thick) * along * _ss(0.05, 0.07, z)
        strands = value_noise(p * torch.tensor([0.25, 1.0, 1.0]), 900.0, self.look.noise_seed + 11)
        return _mix(col, torch.tensor(self.look.brow), inside * (0.75 + 0.25 * strands))

    def _hair(self, p: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        azim = torch.atan2(x.abs(), z)  # 0 at the face, pi at the back
        hairline_front = A.HAIRLINE_Y + self.look.hairline_shift - 0.018 * _ss(0.025, 0.065, x.abs())
        side = _ss(0.45, 1.2, azim)          # front -> side of the head
        back = _ss(1.75, 2.4, azim)          # side -> back of the head
        line = hairline_front * (1.0 - side) + 0.036 * side
        line = line * (1.0 - back) + (-0.070) * back
        wobble = 0.003 * (fbm(p, 90.0, octaves=2, seed=self.look.noise_seed + 5) - 0.5)
        hair = _ss(-0.0015, 0.0025, y - line + wobble)
        # Keep the ears bare.
        ear = _ss(0.060, 0.070, x.abs()) * torch.exp(-0.5 * (((y - 0.004) / 0.022) ** 2 + ((z + 0.014) / 0.014) ** 2))
        hair = hair * (1.0 - _ss(0.3, 0.6, ear))
        # Strands: streaks stretched along the meridians (fine across, long along).
        polar = torch.atan2(torch.hypot(x, z), y - 0.02)
        q = torch.stack([azim * 0.09 * 1.0, polar * 0.012, torch.sign(x) * 0.01], -1)
        streak = value_noise(q, 900.0, self.look.noise_seed + 17)
        clump = fbm(p, 60.0, octaves=2, seed=self.look.noise_seed + 19)
        hc = torch.tensor(self.look.hair, dtype=torch.float32, device=p.device)
        hair_col = hc * (0.65 + 0.45 * streak * (0.6 + 0.8 * clump))[:, None]
        return _mix(col, hair_col, hair)

    def _mouth(self, p: torch.Tensor) -> torch.Tensor:
        y, z = p[:, 1], p[:, 2]
        depth = self.mouth_z - z
        lips = torch.tensor(self.look.lips, dtype=torch.float32)
        cavity = torch.tensor([0.20, 0.05, 0.06])
        tongue = torch.tensor([0.55, 0.22, 0.24])
        col = _mix(lips.expand(p.shape[0], 3), cavity, _ss(0.002, 0.010, depth))
        is_tongue = _ss(self.mouth_y - 0.003, self.mouth_y - 0.009, y) * _ss(0.006, 0.014, depth)
        col = _mix(col, tongue, 0.8 * is_tongue)
        # Deeper is darker (little light reaches the throat).
        return col * (1.0 - 0.6 * _ss(0.015, 0.045, depth))[:, None]

    def _eye(self, p: torch.Tensor) -> torch.Tensor:
        c = self.eye_centres.to(p.device)
        centre = torch.where((p[:, 0] >= 0)[:, None], c[0], c[1])
        d = p - centre
        d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True).clamp_min(1e-9)
        r = torch.hypot(d[:, 0], d[:, 1]) * (d[:, 2] > 0) + 2.0 * (d[:, 2] <= 0)  # 0 at the pupil
        sclera = torch.tensor([0.92, 0.89, 0.86]).expand(p.shape[0], 3)
        col = _mix(sclera, torch.tensor([0.80, 0.55, 0.52]), 0.5 * _ss(0.55, 0.95, r))
        ang = torch.atan2(d[:, 1], d[:, 0])
        streak = value_noise(torch.stack([torch.cos(ang), torch.sin(ang), r * 3.0], -1), 14.0,
                             self.look.noise_seed + 23)
        iris = torch.tensor(self.look.iris) * (0.7 + 0.6 * streak)[:, None]
        iris = iris * (1.0 - 0.5 * _ss(0.36, 0.46, r))[:, None]          # limbal ring
        col = _mix(col, iris, _ss(0.47, 0.44, r))
        return _mix(col, torch.tensor([0.03, 0.03, 0.035]), _ss(0.19, 0.16, r))

    def _cloth(self, p: torch.Tensor) -> torch.Tensor:
        """The shirt of the torso (:mod:`synthetic.torso`): the identity's colour with a fine weave
        (1.2 cm stripes) and a seam line down the front, so the region has texture to fit."""
        base = torch.as_tensor(cloth_colour(self.look.noise_seed), dtype=torch.float32, device=p.device)
        weave = 1.0 + 0.07 * torch.sin(2 * math.pi * p[:, 0] / 0.012) * torch.sin(2 * math.pi * p[:, 1] / 0.017)
        seam = 1.0 - 0.25 * torch.exp(-(p[:, 0] / 0.003) ** 2) * (p[:, 2] > 0).to(p.dtype)
        return (base[None] * (weave * seam)[:, None]).clamp(0.0, 1.0)

    def _teeth(self, p: torch.Tensor) -> torch.Tensor:
        x, y = p[:, 0], p[:, 1]
        enamel = torch.tensor([0.93, 0.91, 0.84]).expand(p.shape[0], 3)
        gap = _ss(0.80, 0.97, 0.5 + 0.5 * torch.cos(2 * math.pi * x / 0.0072))
        col = enamel * (1.0 - 0.35 * gap)[:, None]
        gum = _ss(0.0075, 0.0095, (y - self.teeth_middle_y).abs())
        return _mix(col, torch.tensor([0.72, 0.36, 0.38]), gum)


def shade(normals: torch.Tensor, head_rotation: torch.Tensor) -> torch.Tensor:
    """Lambert + ambient with the light fixed in the head frame.

    Args:
        normals: (N, 3) unit world-space normals.
        head_rotation: (3, 3) world rotation of the head (global rotation @ neck rotation).

    Returns:
        (N,) shading factors.
    """
    light = torch.tensor(LIGHT_DIR_HEAD, dtype=normals.dtype, device=normals.device)
    light = head_rotation.to(normals.dtype) @ (light / light.norm())
    return AMBIENT + DIFFUSE * (normals @ light).clamp_min(0.0)
