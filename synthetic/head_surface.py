"""Template mesh of the synthetic head: skin, mouth pocket and eyeballs.

The skin is a smooth implicit surface (ellipsoids, a neck cylinder and a nose blended with smooth
minimum, plus Gaussian bumps for brows, cheekbones, lips, chin and ears, and almond-shaped eye
openings). It is star-shaped around :data:`anatomy.PARAM_CENTRE`, so it is meshed by shooting one
ray per vertex of a latitude/longitude grid (denser over the face) and bisecting the field along
it: a closed, fold-free surface with poles at the top of the head and the bottom of the neck.

The mouth is a cut along one grid row (the slit): its interior vertices are duplicated so that
the lower lip can follow the jaw; behind the slit a closed pocket (the dark mouth interior) joins
the upper and lower copies, so the mesh stays closed when the mouth opens. The eyeballs are
separate spheres that show through the lid openings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import anatomy as A

__all__ = ["HeadTemplate", "build_head_template", "PART_SKIN", "PART_POCKET", "PART_LEFT_EYE", "PART_RIGHT_EYE",
           "MATERIAL_SKIN", "MATERIAL_MOUTH", "MATERIAL_EYE", "MATERIAL_TEETH"]

PART_SKIN, PART_POCKET, PART_LEFT_EYE, PART_RIGHT_EYE = 0, 1, 2, 3
MATERIAL_SKIN, MATERIAL_MOUTH, MATERIAL_EYE, MATERIAL_TEETH = 0, 1, 2, 3

N_LAT = 50          # grid rows between the two poles
N_LON = 72          # grid columns (even: symmetric about x = 0 with columns at phi = 0 and pi)
SLIT_HALF = 7       # the slit spans 2 * SLIT_HALF + 1 = 15 columns (lip rings have 15 vertices)
POCKET_SEGMENTS = 12
EYE_RINGS, EYE_SEGMENTS = 9, 16


@dataclass
class HeadTemplate:
    """The template (mean) head before any blendshape.

    Attributes:
        vertices: (V, 3) float64 positions.
        faces: (F, 3) int64, counter-clockwise seen from outside (normals point out of the solid).
        part: (V,) int64 part id (PART_*).
        face_material: (F,) int64 material id (MATERIAL_*; teeth are added later by FLAME).
        lip_side: (V,) +1 on the upper copy of the slit, -1 on the lower copy, 0 elsewhere.
        pocket_t: (V,) loop parameter in [0, 2 pi] of pocket vertices (0 upper lip, pi back of the
            mouth, 2 pi lower lip), nan elsewhere.
        grid_index: (N_LAT, N_LON) int64 vertex index of every grid vertex (upper copies on the slit).
        slit_row: grid row of the mouth slit; slit_cols: (15,) grid columns from the subject's
            right (-x) to left (+x), corners first and last.
        ring_upper, ring_lower: (15,) ordered outer lip rings (left to right in a frontal image).
        eye_centres: (2, 3) left (+x) and right (-x) eyeball centres.
        landmarks: named points/values derived while building (mouth corners, slit height...).
    """

    vertices: np.ndarray
    faces: np.ndarray
    part: np.ndarray
    face_material: np.ndarray
    lip_side: np.ndarray
    pocket_t: np.ndarray
    grid_index: np.ndarray
    slit_row: int
    slit_cols: np.ndarray
    ring_upper: np.ndarray
    ring_lower: np.ndarray
    eye_centres: np.ndarray
    landmarks: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- implicit field
def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (union of two solids with a fillet of size ~k)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def _ellipsoid(p: np.ndarray, centre, axes) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (negative inside)."""
    q = (p - np.asarray(centre)) / np.asarray(axes)
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / np.asarray(axes), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _capsule(p: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float, x_squash: float) -> np.ndarray:
    """Signed distance to a tapered capsule from a (radius ra) to b (radius rb), squashed in x."""
    q = p.copy()
    q[:, 0] /= x_squash
    ab = b - a
    t = np.clip(((q - a) @ ab) / (ab @ ab), 0.0, 1.0)
    closest = a + t[:, None] * ab
    return np.linalg.norm(q - closest, axis=-1) - (ra + (rb - ra) * t)


def _neck(p: np.ndarray) -> np.ndarray:
    """Vertical elliptic cylinder from the bottom of the neck up into the head."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    rx, rz, zc = 0.058, 0.060, -0.014
    side = (np.sqrt((x / rx) ** 2 + ((z - zc) / rz) ** 2) - 1.0) * rx
    bottom = A.NECK_BOTTOM_Y - y
    top = y + 0.02
    return np.maximum(-_smin(-side, -bottom, 0.012), top)


def _bumps(p: np.ndarray) -> np.ndarray:
    """Outward offsets (metres) of the facial relief: brows, cheekbones, lips, chin, ears."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    xy = np.stack([ax, y], -1)
    front = A.front_weight(p, 0.03, 0.07)
    out = 0.0040 * A.gauss(xy, (0.022, A.BROW_Y - 0.003), (0.024, 0.008)) * front          # brow ridge
    out += 0.0050 * A.gauss(xy, (0.046, -0.002), (0.014, 0.013)) * A.front_weight(p, 0.02, 0.05)  # cheekbones
    mouth_front = A.front_weight(p, 0.05, 0.08)
    out += 0.0032 * A.gauss(xy, (0.0, A.MOUTH_Y + 0.0065), (0.017, 0.0045)) * mouth_front    # upper lip
    out += 0.0040 * A.gauss(xy, (0.0, A.MOUTH_Y - 0.0075), (0.014, 0.0050)) * mouth_front    # lower lip
    out -= 0.0025 * A.gauss(xy, (0.0, A.MOUTH_Y - 0.017), (0.016, 0.004)) * mouth_front     # labiomental fold
    out += 0.0080 * A.gauss(xy, (0.0, A.CHIN_Y + 0.003), (0.016, 0.011)) * mouth_front      # chin
    out -= 0.0030 * A.gauss(np.stack([y, z], -1), (0.040, 0.035), (0.015, 0.015)) * A.smoothstep(0.03, 0.06, ax)
    side = A.smoothstep(0.050, 0.072, ax)
    yz = np.stack([y, z], -1)
    out += 0.0140 * A.gauss(yz, (0.004, -0.014), (0.019, 0.009)) * side                    # ears
    out -= 0.0040 * A.gauss(yz, (0.004, -0.012), (0.006, 0.004)) * side                    # ear hollow
    return out


def _base_field(p: np.ndarray) -> np.ndarray:
    """Skin without the eye openings: negative inside the head. p: (N, 3) -> (N,)."""
    y = p[:, 1]
    cranium = _ellipsoid(p, (0.0, 0.030, -0.012), (0.078, 0.099, 0.100))
    jaw_p = p.copy()
    # The lower face narrows towards the chin.
    jaw_p[:, 0] /= 1.0 - 0.14 * A.smoothstep(-0.030, -0.105, y)
    jaw = _ellipsoid(jaw_p, (0.0, -0.047, 0.015), (0.064, 0.070, 0.082))
    f = _smin(cranium, jaw, 0.03)
    f = _smin(f, _neck(p), 0.045)
    nose = _capsule(p, A.NOSE_BRIDGE, A.NOSE_TIP, 0.0050, 0.0100, 0.9)
    f = _smin(f, nose, 0.012)
    wings = np.minimum(np.linalg.norm(p - [0.0125, -0.015, 0.091], axis=-1),
                       np.linalg.norm(p - [-0.0125, -0.015, 0.091], axis=-1)) - 0.0075
    f = _smin(f, wings, 0.006)
    return f - _bumps(p)


def _eye_window(p: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Flat-topped window (1 over the eye opening, 0 beyond ~2.5 cm) around one eye."""
    dx = (p[:, 0] - centre[0]) / 0.019
    dy = (p[:, 1] - centre[1]) / 0.015
    return np.exp(-((dx * dx + dy * dy) ** 3)) * A.front_weight(p, 0.03, 0.06)


def _lid_height(p: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """z of the lid skin around an eye.

    A smooth height field EYE_LID_RECESS behind the eyeball front at the eye centre, slowly
    receding towards the eye corners (so the opening is wide) and rising quickly above and below
    (the lids), saturating so that the lids do not bulge beyond the brow and the cheek. The lid
    opening is where the eyeball sphere pokes through this surface: an almond about
    2 x 10 mm wide and 2 x 5 mm tall.
    """
    dx, dy = p[:, 0] - centre[0], p[:, 1] - centre[1]
    rise = 178.0 * dy * dy / (1.0 + (dy / 0.007) ** 2)
    return centre[2] + A.EYE_RADIUS - A.EYE_LID_RECESS - 12.0 * dx * dx + rise


def _field(p: np.ndarray, eye_centres: np.ndarray) -> np.ndarray:
    """Full skin field: base surface with the lid height fields blended in around each eye."""
    f = _base_field(p)
    for c in eye_centres:
        w = _eye_window(p, c)
        f = (1.0 - w) * f + w * (p[:, 2] - _lid_height(p, c))
    return f


def _ray_surface(dirs: np.ndarray, field_fn, r_max: float = 0.4, iters: int = 32) -> np.ndarray:
    """Distance along each unit ray from PARAM_CENTRE to the surface field_fn = 0 (bisection).

    Args:
        dirs: (N, 3) unit directions.

    Returns:
        (N,) radii.
    """
    lo = np.zeros(dirs.shape[0])
    hi = np.full(dirs.shape[0], r_max)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = field_fn(A.PARAM_CENTRE + mid[:, None] * dirs) < 0
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    return 0.5 * (lo + hi)


def _eye_centres() -> np.ndarray:
    """Eyeball centres: the cornea front sits 1 mm in front of the base skin at the eye."""
    dirs = np.array([[0.0, 0.0, 1.0]])
    centres = []
    for sx in (1.0, -1.0):
        # March along +z from the eye's (x, y) to the base surface.
        origin = np.array([sx * A.EYE_X, A.EYE_Y, 0.0])
        lo, hi = 0.0, 0.2
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            if _base_field((origin + mid * dirs[0])[None])[0] < 0:
                lo = mid
            else:
                hi = mid
        z_skin = 0.5 * (lo + hi)
        centres.append([sx * A.EYE_X, A.EYE_Y, z_skin - A.EYE_RADIUS + 0.001])
    return np.array(centres)


# ----------------------------------------------------------------------------- grid sampling
def _warped(n: int, lo: float, hi: float, bumps: list[tuple[float, float, float]]) -> np.ndarray:
    """n samples in [lo, hi] (ends included) whose density is 1 + sum of smooth boxes.

    Args:
        bumps: (start, end, gain) intervals where the density is raised by ``gain``.
    """
    fine = np.linspace(lo, hi, 20001)
    dens = np.ones_like(fine)
    for s, e, g in bumps:
        dens += g * A.smoothstep(s - 0.08, s + 0.08, fine) * (1.0 - A.smoothstep(e - 0.08, e + 0.08, fine))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    return np.interp(np.linspace(0.0, cdf[-1], n), cdf, fine)


def _grid_angles() -> tuple[np.ndarray, np.ndarray]:
    """Polar angles (from +y) of the N_LAT rows and azimuths (0 = +z, +pi/2 = +x) of the columns."""
    deg = np.pi / 180.0
    theta = _warped(N_LAT + 2, 0.0, np.pi, [(30 * deg, 150 * deg, 1.4), (95 * deg, 132 * deg, 1.0),
                                             (55 * deg, 80 * deg, 0.6)])[1:-1]
    half = N_LON // 2
    phi_half = _warped(half + 1, 0.0, np.pi, [(0.0, 60 * deg, 2.0), (0.0, 28 * deg, 1.2)])
    # Columns in increasing azimuth: -phi (subject's right), 0, +phi (left), pi.
    phi = np.concatenate([-phi_half[1:half][::-1], phi_half[:half], [np.pi]])
    return theta, phi


def _directions(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit vectors for polar angle theta from +y and azimuth phi from +z towards +x."""
    theta, phi = np.broadcast_arrays(theta, phi)
    st = np.sin(theta)
    return np.stack([st * np.sin(phi), np.cos(theta), st * np.cos(phi)], -1)


def _uv_sphere(centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Sphere with poles on the z axis (the front pole is the pupil). Returns (verts, faces)."""
    th = np.linspace(0.0, np.pi, EYE_RINGS + 2)[1:-1]
    ph = np.linspace(0.0, 2 * np.pi, EYE_SEGMENTS, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 0, 1.0]], ring, [[0, 0, -1.0]]]) * radius + centre
    faces = []
    n = EYE_SEGMENTS
    idx = lambda i, j: 1 + i * n + (j % n)  # noqa: E731
    for j in range(n):
        faces.append([0, idx(0, j), idx(0, j + 1)])
        faces.append([len(verts) - 1, idx(EYE_RINGS - 1, j + 1), idx(EYE_RINGS - 1, j)])
    for i in range(EYE_RINGS - 1):
        for j in range(n):
            faces.append([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)])
            faces.append([idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)])
    faces = np.array(faces, dtype=np.int64)
    return verts, _orient_outward(verts, faces, centre)


def _orient_outward(verts: np.ndarray, faces: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Flip faces whose normal points towards ``centre`` (for star-shaped pieces)."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    inward = ((tri.mean(1) - centre) * n).sum(-1) < 0
    faces = faces.copy()
    faces[inward] = faces[inward][:, [0, 2, 1]]
    return faces


# ----------------------------------------------------------------------------- assembly
def build_head_template() -> HeadTemplate:
    """Build the template head (deterministic, ~0.1 s).

    Returns:
        :class:`HeadTemplate` (about 4000 vertices, 8000 faces).
    """
    eye_centres = _eye_centres()
    field_fn = lambda p: _field(p, eye_centres)  # noqa: E731
    theta, phi = _grid_angles()
    dirs = _directions(theta[:, None], phi[None, :]).reshape(-1, 3)
    radii = _ray_surface(dirs, field_fn)
    grid_pos = A.PARAM_CENTRE + radii[:, None] * dirs
    poles = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    pole_pos = A.PARAM_CENTRE + _ray_surface(poles, field_fn)[:, None] * poles

    n_grid = N_LAT * N_LON
    top, bottom = n_grid, n_grid + 1
    grid_index = np.arange(n_grid, dtype=np.int64).reshape(N_LAT, N_LON)
    verts = [grid_pos, pole_pos]
    n_verts = n_grid + 2

    # Mouth slit: the grid row closest to MOUTH_Y at the front column; 15 columns centred on x = 0.
    centre_col = N_LON // 2 - 1
    assert abs(phi[centre_col]) < 1e-12
    front_y = grid_pos[grid_index[:, centre_col], 1]
    slit_row = int(np.argmin(np.abs(front_y - A.MOUTH_Y)))
    slit_cols = np.arange(centre_col - SLIT_HALF, centre_col + SLIT_HALF + 1)
    inner_cols = slit_cols[1:-1]
    upper_ids = grid_index[slit_row, inner_cols]
    lower_ids = n_verts + np.arange(inner_cols.size)
    verts.append(grid_pos[upper_ids])
    n_verts += inner_cols.size
    lower_of = dict(zip(inner_cols.tolist(), lower_ids.tolist()))

    # Skin faces: quads between consecutive rows; rows below the slit use the lower copies.
    faces = []
    half = N_LON // 2
    for i in range(N_LAT - 1):
        for j in range(N_LON):
            j1 = (j + 1) % N_LON
            a, b = grid_index[i, j], grid_index[i, j1]
            c, d = grid_index[i + 1, j], grid_index[i + 1, j1]
            if i == slit_row:
                a, b = lower_of.get(j, a), lower_of.get(j1, b)
            # Mirror the diagonal across x = 0 so the triangulation is left/right symmetric.
            if j < half - 1 or j == N_LON - 1:
                faces += [[a, c, d], [a, d, b]]
            else:
                faces += [[a, c, b], [b, c, d]]
    for j in range(N_LON):
        j1 = (j + 1) % N_LON
        faces.append([top, grid_index[0, j], grid_index[0, j1]])
        faces.append([bottom, grid_index[N_LAT - 1, j1], grid_index[N_LAT - 1, j]])
    faces = np.array(faces, dtype=np.int64)
    all_pos = np.concatenate(verts, 0)
    faces = _orient_outward(all_pos, faces, A.PARAM_CENTRE)
    skin_faces = faces

    # Mouth pocket: per inner slit column a closed loop in the sagittal plane from the upper copy
    # back to the throat and forward to the lower copy; corners collapse to the corner vertex.
    slit_pos = grid_pos[grid_index[slit_row, slit_cols]]
    m_seg = POCKET_SEGMENTS
    t_vals = 2 * np.pi * np.arange(1, m_seg) / m_seg
    rel = (slit_pos[:, 0] / np.abs(slit_pos[[0, -1], 0]).mean()).clip(-1, 1)
    taper = np.sqrt(1.0 - rel ** 2)                                     # 0 at the corners
    pocket = []
    for k in range(1, slit_cols.size - 1):
        s = slit_pos[k]
        tk = taper[k] ** 0.5
        height = np.where(t_vals < np.pi, A.POCKET_UP, -A.POCKET_DOWN) * np.sin(t_vals) ** 2 * tk
        depth = A.POCKET_DEPTH * (0.5 - 0.5 * np.cos(t_vals)) * (0.35 + 0.65 * tk)
        x = s[0] * (1.0 - 0.35 * np.sin(t_vals / 2.0) ** 2)
        pocket.append(np.stack([x, s[1] + height, s[2] - depth], -1))
    pocket = np.concatenate(pocket, 0)
    pocket_ids = n_verts + np.arange(pocket.shape[0]).reshape(inner_cols.size, m_seg - 1)
    n_verts += pocket.shape[0]
    all_pos = np.concatenate([all_pos, pocket], 0)

    def loop_id(k: int, m: int) -> int:
        if k == 0 or k == slit_cols.size - 1:
            return int(grid_index[slit_row, slit_cols[k]])
        if m == 0:
            return int(upper_ids[k - 1])
        if m == m_seg:
            return int(lower_ids[k - 1])
        return int(pocket_ids[k - 1, m - 1])

    pocket_faces = []
    for k in range(slit_cols.size - 1):
        for m in range(m_seg):
            a, b = loop_id(k, m), loop_id(k + 1, m)
            c, d = loop_id(k, m + 1), loop_id(k + 1, m + 1)
            for tri in ([a, b, d], [a, d, c]):
                if len(set(tri)) == 3:
                    pocket_faces.append(tri)
    pocket_faces = np.array(pocket_faces, dtype=np.int64)
    # Orient the pocket consistently with the skin: the skin face just above the slit uses the
    # directed edge (upper_k, upper_k+1) in one direction, the pocket must use it reversed.
    pocket_faces = _match_orientation(skin_faces, pocket_faces)

    # Eyeballs (left = +x first, FLAME's joint order: left eye then right eye).
    eye_v, eye_f = [], []
    for c in eye_centres:
        v, f = _uv_sphere(c, A.EYE_RADIUS)
        eye_f.append(f + n_verts)
        eye_v.append(v)
        n_verts += v.shape[0]
    vertices = np.concatenate([all_pos] + eye_v, 0)
    faces = np.concatenate([skin_faces, pocket_faces] + eye_f, 0)

    part = np.zeros(n_verts, dtype=np.int64)
    part[pocket_ids.reshape(-1)] = PART_POCKET
    n_eye = eye_v[0].shape[0]
    part[n_verts - 2 * n_eye:n_verts - n_eye] = PART_LEFT_EYE
    part[n_verts - n_eye:] = PART_RIGHT_EYE
    face_material = np.concatenate([np.full(len(skin_faces), MATERIAL_SKIN), np.full(len(pocket_faces), MATERIAL_MOUTH),
                                    np.full(2 * len(eye_f[0]), MATERIAL_EYE)]).astype(np.int64)
    lip_side = np.zeros(n_verts, dtype=np.int64)
    lip_side[upper_ids] = 1
    lip_side[lower_ids] = -1
    pocket_t = np.full(n_verts, np.nan)
    pocket_t[pocket_ids] = np.broadcast_to(t_vals, pocket_ids.shape)

    # Outer lip rings: the first grid rows >= 3.5 mm above / below the slit, same 15 columns (the
    # teeth sit 1.5 d behind the lips, d = ring distance, so close rings keep the teeth visible).
    def ring_row(step: int) -> int:
        r = slit_row
        while abs(front_y[r] - front_y[slit_row]) < 0.0035:
            r += step
        return r
    ring_upper = grid_index[ring_row(-1), slit_cols]
    ring_lower = grid_index[ring_row(+1), slit_cols]

    landmarks = {
        "mouth_y": float(front_y[slit_row]),
        "mouth_z": float(slit_pos[SLIT_HALF, 2]),
        "mouth_corners": slit_pos[[0, -1]].copy(),
        "upper_lip_y": float(vertices[ring_upper[SLIT_HALF], 1]),
        "lower_lip_y": float(vertices[ring_lower[SLIT_HALF], 1]),
        "nose_tip": A.NOSE_TIP.copy(),
    }
    return HeadTemplate(vertices=vertices, faces=faces, part=part, face_material=face_material, lip_side=lip_side,
                        pocket_t=pocket_t, grid_index=grid_index, slit_row=slit_row, slit_cols=slit_cols,
                        ring_upper=ring_upper, ring_lower=ring_lower, eye_centres=eye_centres, landmarks=landmarks)


def _match_orientation(reference: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip ``faces`` as a block if they share a directed edge with ``reference`` (inconsistent)."""
    ref_edges = {(int(f[i]), int(f[(i + 1) % 3])) for f in reference for i in range(3)}
    clash = sum((int(f[i]), int(f[(i + 1) % 3])) in ref_edges for f in faces for i in range(3))
    return faces[:, [0, 2, 1]] if clash else faces


_RADIUS_CACHE: dict = {}


def skin_surface_grid(n_theta: int, n_phi: int, coarse: tuple[int, int] = (128, 256)) -> np.ndarray:
    """Skin surface points on an equirectangular grid of directions around PARAM_CENTRE.

    Texel (i, j) is the direction with polar angle (i + 0.5) pi / n_theta from +y and azimuth
    -pi + (j + 0.5) 2 pi / n_phi from +z towards +x. The radius is found by bisection on a coarse
    grid and interpolated (the surface is smooth), which is all a texture bake needs.

    Returns:
        (n_theta, n_phi, 3) float64 positions.
    """
    ct, cp = coarse
    if coarse not in _RADIUS_CACHE:  # identity-independent: computed once per process
        eye_centres = _eye_centres()
        theta_c = (np.arange(ct) + 0.5) * np.pi / ct
        phi_c = -np.pi + (np.arange(cp) + 0.5) * 2 * np.pi / cp
        _RADIUS_CACHE[coarse] = _ray_surface(_directions(theta_c[:, None], phi_c[None, :]).reshape(-1, 3),
                                             lambda p: _field(p, eye_centres)).reshape(ct, cp)
    radius_c = _RADIUS_CACHE[coarse]
    theta = (np.arange(n_theta) + 0.5) * np.pi / n_theta
    phi = -np.pi + (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    # Bilinear interpolation of the radius, wrapping in azimuth.
    ti = np.clip(theta / np.pi * ct - 0.5, 0, ct - 1)
    pj = (phi + np.pi) / (2 * np.pi) * cp - 0.5
    t0 = np.floor(ti).astype(int)
    t1 = np.minimum(t0 + 1, ct - 1)
    ft = (ti - t0)[:, None]
    p0 = np.floor(pj).astype(int)
    fp = (pj - p0)[None, :]
    p0, p1 = p0 % cp, (p0 + 1) % cp
    r = ((1 - ft) * ((1 - fp) * radius_c[t0][:, p0] + fp * radius_c[t0][:, p1])
         + ft * ((1 - fp) * radius_c[t1][:, p0] + fp * radius_c[t1][:, p1]))
    return A.PARAM_CENTRE + r[..., None] * _directions(theta[:, None], phi[None, :])
