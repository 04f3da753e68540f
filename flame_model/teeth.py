"""GaussianAvatars-style teeth: 8 rows of vertices built from the outer lip rings (docs/DESIGN.md section 2).

Real tracked data (VHAP / GaussianAvatars) carries ``static_offset`` rows for the teeth, so the
vertex placement and order here must be exactly GaussianAvatars' (docs/DESIGN.md section 2):

    rows appended after the base mesh (N = ring length, 15 for FLAME):
        0 upper root, 1 lower root, 2 upper edge, 3 lower edge,
        4 upper root back, 5 upper edge back, 6 lower root back, 7 lower edge back

Faces: per jaw three strips of N-1 quads (two triangles each): front (root-edge), back
(root back-edge back) and biting edge (edge back-edge); upper jaw first. Face order is not tied
to any data, but winding is chosen so that every teeth triangle faces *outward* with the usual
counter-clockwise convention (normal = (v1 - v0) x (v2 - v0)): front strips face +z (FLAME's
face looks along +z), back strips -z, the upper biting strip faces down (-y, towards the lower
jaw) and the lower biting strip up (+y). Because a model's rings may run either way along x,
each strip's winding is decided from its summed normal on the template.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FLAME_LIP_RING_UPPER", "FLAME_LIP_RING_LOWER", "FLAME_NUM_VERTICES", "TEETH_ROWS",
           "UPPER_ROWS", "LOWER_ROWS", "TeethGeometry", "build_teeth", "teeth_shapedirs"]

#: Outer upper/lower lip rings of the FLAME topology, 15 vertices each, ordered left to right.
FLAME_LIP_RING_UPPER = (1713, 1715, 1716, 1735, 1696, 1694, 1657, 3543, 2774, 2811, 2813, 2850, 2833, 2832, 2830)
FLAME_LIP_RING_LOWER = (1576, 1577, 1773, 1774, 1795, 1802, 1865, 3503, 2948, 2905, 2898, 2881, 2880, 2713, 2712)
FLAME_NUM_VERTICES = 5023

#: Row order of the teeth vertices (see module doc).
TEETH_ROWS = ("upper_root", "lower_root", "upper_edge", "lower_edge",
              "upper_root_back", "upper_edge_back", "lower_root_back", "lower_edge_back")
UPPER_ROWS = (0, 2, 4, 5)  # skinned to the neck joint
LOWER_ROWS = (1, 3, 6, 7)  # skinned to the jaw joint

# (row a, row b, outward direction) per strip; upper jaw then lower jaw; front, back, biting edge.
_STRIPS = (
    (0, 2, (0.0, 0.0, 1.0)), (4, 5, (0.0, 0.0, -1.0)), (5, 2, (0.0, -1.0, 0.0)),
    (3, 1, (0.0, 0.0, 1.0)), (7, 6, (0.0, 0.0, -1.0)), (7, 3, (0.0, 1.0, 0.0)),
)


@dataclass
class TeethGeometry:
    """Teeth added to a mesh of ``num_base`` vertices.

    Attributes:
        vertices: (8N, 3) template positions, rows as in :data:`TEETH_ROWS`.
        faces: (12(N-1), 3) int64 triangles indexing the full mesh (base vertices first).
        upper: (4N,) int64 indices (into the full mesh) of the upper-jaw teeth vertices.
        lower: (4N,) int64 indices of the lower-jaw teeth vertices.
        ring_upper, ring_lower: (N,) int64 lip-ring indices the teeth were built from.
        mean_distance: d, the mean upper/lower ring distance.
    """

    vertices: np.ndarray
    faces: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    ring_upper: np.ndarray
    ring_lower: np.ndarray
    mean_distance: float

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])


def _strip(row_a: np.ndarray, row_b: np.ndarray, positions: np.ndarray, outward: np.ndarray) -> np.ndarray:
    """Two triangles per quad (a_k, a_k+1, b_k+1, b_k), wound so the summed normal faces ``outward``.

    Args:
        row_a, row_b: (N,) vertex indices of the two rows.
        positions: (M, 3) positions indexed by the rows.
        outward: (3,) desired normal direction.

    Returns:
        (2(N-1), 3) int64 triangles.
    """
    a0, a1, b0, b1 = row_a[:-1], row_a[1:], row_b[:-1], row_b[1:]
    tris = np.stack([np.stack([a0, b0, a1], 1), np.stack([a1, b0, b1], 1)], 1).reshape(-1, 3)
    p = positions[tris]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]).sum(0)
    if float(normal @ outward) < 0:
        tris = tris[:, [0, 2, 1]]
    return tris.astype(np.int64)


def build_teeth(v_template: np.ndarray, ring_upper, ring_lower) -> TeethGeometry:
    """Place the teeth rows on the template (docs/DESIGN.md section 2).

    d = mean |upper_k - lower_k|; middle = ring midpoints, all at their mean y, moved 1.5 d back in
    z; upper edge = middle + 0.1 d y; upper root = upper edge + 2 d y; lower edge = middle - 0.1 d y
    and 0.4 d further back; lower root = lower edge - 2 d y; back copies d further back in z.

    Args:
        v_template: (V, 3) base template (no teeth).
        ring_upper, ring_lower: (N,) vertex indices of the outer lip rings, paired by position.

    Returns:
        :class:`TeethGeometry` with indices offset by V.
    """
    v_template = np.asarray(v_template, dtype=np.float64)
    ring_upper = np.asarray(ring_upper, dtype=np.int64)
    ring_lower = np.asarray(ring_lower, dtype=np.int64)
    upper, lower = v_template[ring_upper], v_template[ring_lower]
    d = float(np.linalg.norm(upper - lower, axis=-1).mean())
    dy = np.array([0.0, d, 0.0])
    dz = np.array([0.0, 0.0, d])

    middle = (upper + lower) / 2
    middle[:, 1] = middle[:, 1].mean()
    middle = middle - 1.5 * dz
    upper_edge = middle + 0.1 * dy
    upper_root = upper_edge + 2 * dy
    lower_edge = middle - 0.1 * dy - 0.4 * dz
    lower_root = lower_edge - 2 * dy
    rows = [upper_root, lower_root, upper_edge, lower_edge,
            upper_root - dz, upper_edge - dz, lower_root - dz, lower_edge - dz]
    vertices = np.concatenate(rows, 0)

    num_base, n = v_template.shape[0], ring_upper.shape[0]
    row_ids = num_base + np.arange(8 * n, dtype=np.int64).reshape(8, n)
    positions = np.concatenate([v_template, vertices], 0)
    faces = np.concatenate([_strip(row_ids[a], row_ids[b], positions, np.asarray(out))
                            for a, b, out in _STRIPS], 0)
    return TeethGeometry(vertices=vertices, faces=faces,
                         upper=row_ids[list(UPPER_ROWS)].reshape(-1), lower=row_ids[list(LOWER_ROWS)].reshape(-1),
                         ring_upper=ring_upper, ring_lower=ring_lower, mean_distance=d)


def teeth_shapedirs(shapedirs: np.ndarray, ring_upper, ring_lower, n_shape: int) -> np.ndarray:
    """Shape directions of the teeth vertices.

    Column k of every teeth row gets the mean of the two ring vertices' (upper_k, lower_k)
    identity directions, so the teeth follow the subject's mouth; the expression part stays zero
    (expressions move the lips, the teeth move only with the jaw).

    Args:
        shapedirs: (V, 3, C) base directions, the first ``n_shape`` columns being identity.
        ring_upper, ring_lower: (N,) ring indices.
        n_shape: number of identity columns.

    Returns:
        (8N, 3, C) directions in the row order of :data:`TEETH_ROWS`.
    """
    ring_upper = np.asarray(ring_upper, dtype=np.int64)
    ring_lower = np.asarray(ring_lower, dtype=np.int64)
    out = np.zeros((8 * ring_upper.shape[0],) + shapedirs.shape[1:], dtype=shapedirs.dtype)
    mean = (shapedirs[ring_upper, :, :n_shape] + shapedirs[ring_lower, :, :n_shape]) / 2
    out[:, :, :n_shape] = np.tile(mean, (8, 1, 1))
    return out
