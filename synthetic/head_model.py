"""The synthetic head as a FLAME-format model: skinning, joints, region masks and the pickles.

``build_head_model()`` assembles the template (:mod:`.head_surface`), the blendshapes
(:mod:`.blendshapes`), skinning weights, the joint regressor and the region masks;
``write_flame_files()`` writes them in the official FLAME pickle layout (plain numpy arrays and a
scipy ``csc_matrix`` instead of chumpy objects), which ``flame_model.FLAME`` loads like the real
``flame2023.pkl`` / ``FLAME_masks.pkl``.

Joints (FLAME order): 0 global (root, base of the neck), 1 neck (top of the neck), 2 jaw (hinge in
front of the ears), 3 left eye (+x), 4 right eye.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from utils.atomic import atomic_write

from . import anatomy as A
from .blendshapes import expression_basis, pose_correctives, shape_basis
from .head_surface import PART_LEFT_EYE, PART_POCKET, PART_RIGHT_EYE, PART_SKIN, HeadTemplate, build_head_template

__all__ = ["SyntheticHeadModel", "build_head_model", "write_flame_files", "KINTREE_TABLE", "FLAME_FILENAME",
           "MASKS_FILENAME"]

FLAME_FILENAME = "flame2023.pkl"
MASKS_FILENAME = "FLAME_masks.pkl"
# FLAME's kinematic tree: the root's parent is uint32 max.
KINTREE_TABLE = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
N_SHAPE, N_EXPR = 300, 100


@dataclass
class SyntheticHeadModel:
    """FLAME-layout arrays of the synthetic head (V vertices, F faces, no teeth).

    Attributes:
        template: the :class:`HeadTemplate` (geometry + part labels + landmarks).
        shapedirs: (V, 3, 400) = 300 identity + 100 expression directions.
        posedirs: (V, 3, 36); weights: (V, 5); j_regressor: (5, V) dense.
        masks: region name -> int64 vertex indices (plus the two ordered lip rings).
    """

    template: HeadTemplate
    shapedirs: np.ndarray
    posedirs: np.ndarray
    weights: np.ndarray
    j_regressor: np.ndarray
    masks: dict

    @property
    def v_template(self) -> np.ndarray:
        return self.template.vertices

    @property
    def faces(self) -> np.ndarray:
        return self.template.faces


# ----------------------------------------------------------------------------- skinning
def _jaw_weight(template: HeadTemplate) -> np.ndarray:
    """(V,) share of the jaw joint: the lower face below the line from the mouth slit to the hinge.

    Sharp at the slit (upper copies 0, lower copies 1), widening with the distance to the slit so
    the cheeks beyond the mouth corners and the throat blend smoothly.
    """
    p = template.vertices
    y, z = p[:, 1], p[:, 2]
    lm = template.landmarks
    hinge = A.JAW_HINGE
    # Signed distance below the line (in the y-z plane) through the hinge and the slit front.
    u = np.array([lm["mouth_y"] - hinge[1], lm["mouth_z"] - hinge[2]])
    u /= np.linalg.norm(u)
    up = np.array([u[1], -u[0]])  # perpendicular, pointing up/forward
    if up[0] < 0:
        up = -up
    below = -((y - hinge[1]) * up[0] + (z - hinge[2]) * up[1])
    slit = template.vertices[template.grid_index[template.slit_row, template.slit_cols]]
    dist = np.linalg.norm(p[:, None] - slit[None], axis=-1).min(1)
    width = 0.0015 + 0.5 * dist
    side = A.smoothstep(-width, width, below)
    # Only in front of the hinge, and fading down the throat below the jaw line.
    front = A.smoothstep(hinge[2] - 0.025, hinge[2] + 0.025, z)
    jaw_line_a, jaw_line_b = np.array([-0.100, 0.065]), np.array([-0.070, -0.005])  # (y, z) chin -> angle
    d = jaw_line_b - jaw_line_a
    n = np.array([d[1], -d[0]]) / np.linalg.norm(d)
    if n[0] > 0:   # make n point down (towards the throat)
        n = -n
    under = (y - jaw_line_a[0]) * n[0] + (z - jaw_line_a[1]) * n[1]
    throat = 1.0 - A.smoothstep(-0.004, 0.040, under)
    w = side * front * throat
    w[template.lip_side == 1] = 0.0
    w[template.lip_side == -1] = 1.0
    pocket = template.part == PART_POCKET
    w[pocket] = A.smoothstep(0.75 * np.pi, 1.25 * np.pi, template.pocket_t[pocket])
    return w


def _skinning_weights(template: HeadTemplate) -> np.ndarray:
    """(V, 5) LBS weights: root below the neck, neck joint above, jaw share of the lower face, eyes."""
    p = template.vertices
    weights = np.zeros((p.shape[0], 5))
    head = A.smoothstep(-0.16, -0.07, p[:, 1])
    head[template.part == PART_POCKET] = 1.0
    jaw = _jaw_weight(template)
    weights[:, 0] = 1.0 - head
    weights[:, 1] = head * (1.0 - jaw)
    weights[:, 2] = head * jaw
    for part, joint in ((PART_LEFT_EYE, 3), (PART_RIGHT_EYE, 4)):
        rows = template.part == part
        weights[rows] = 0.0
        weights[rows, joint] = 1.0
    return weights


def _pair_regressor(template: HeadTemplate, target: np.ndarray) -> np.ndarray:
    """(V,) weights 1/2 on a left/right mirror pair of skin vertices at the side of the head.

    The joint then lies on the symmetry plane at the pair's height and depth (close to
    ``target``), and follows identity shape changes of the head's sides.
    """
    p = template.vertices
    skin = np.nonzero((template.part == PART_SKIN) & (p[:, 0] > 0.0))[0]
    yz = np.linalg.norm(p[skin][:, 1:] - target[1:], axis=-1)
    left = skin[np.argmin(yz)]
    mirror = p[left] * [-1.0, 1.0, 1.0]
    right = int(np.argmin(np.linalg.norm(p - mirror, axis=-1)))
    w = np.zeros(p.shape[0])
    w[[left, right]] = 0.5
    return w


def _joint_regressor(template: HeadTemplate) -> np.ndarray:
    """(5, V) dense regressor: side-vertex pairs for root/neck/jaw, eyeball means for the eyes."""
    reg = np.zeros((5, template.vertices.shape[0]))
    reg[0] = _pair_regressor(template, np.array([0.0, A.ROOT_JOINT_Y, -0.014]))
    reg[1] = _pair_regressor(template, np.array([0.0, A.NECK_JOINT_Y, -0.014]))
    reg[2] = _pair_regressor(template, A.JAW_HINGE)
    for part, joint in ((PART_LEFT_EYE, 3), (PART_RIGHT_EYE, 4)):
        rows = template.part == part
        reg[joint, rows] = 1.0 / rows.sum()
    return reg


# ----------------------------------------------------------------------------- masks
def _region_masks(template: HeadTemplate) -> dict:
    """Vertex regions in the spirit of FLAME_masks.pkl (name -> int64 indices), plus lip rings."""
    p = template.vertices
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    skin = template.part == PART_SKIN
    pocket = template.part == PART_POCKET
    my = template.landmarks["mouth_y"]
    eye_c = template.eye_centres

    def near_eye(c, rx, ry):
        return ((x - c[0]) / rx) ** 2 + ((y - c[1]) / ry) ** 2 < 1.0
    left_eye_region = skin & near_eye(eye_c[0], 0.024, 0.018) & (z > 0.04)
    right_eye_region = skin & near_eye(eye_c[1], 0.024, 0.018) & (z > 0.04)
    face = skin & (z > 0.035) & (y > A.CHIN_Y - 0.018) & (y < A.HAIRLINE_Y - 0.004) & (ax < 0.062)
    lips = skin & (ax < 0.032) & (np.abs(y - my) < 0.011) & (z > 0.06)
    nose = skin & (((ax / 0.018) ** 2 + ((y + 0.002) / 0.030) ** 2) < 1.0) & (z > 0.075)
    forehead = face & (y > A.BROW_Y + 0.004)
    ear = skin & (ax > 0.065) & (np.abs(y - 0.004) < 0.032) & (np.abs(z + 0.014) < 0.022)
    neck = skin & (y < A.CHIN_Y - 0.025) & ~face
    scalp = skin & ~face & ~ear & ~neck & (y > -0.02) & ((y > A.HAIRLINE_Y - 0.01) | (z < 0.02))
    boundary = skin & (y < A.NECK_BOTTOM_Y + 0.004)
    idx = lambda m: np.nonzero(m)[0].astype(np.int64)  # noqa: E731
    return {
        "face": idx(face), "eye_region": idx(left_eye_region | right_eye_region),
        "left_eye_region": idx(left_eye_region), "right_eye_region": idx(right_eye_region),
        "lips": idx(lips), "nose": idx(nose), "forehead": idx(forehead), "neck": idx(neck), "scalp": idx(scalp),
        "left_ear": idx(ear & (x > 0)), "right_ear": idx(ear & (x < 0)), "boundary": idx(boundary),
        "left_eyeball": idx(template.part == PART_LEFT_EYE), "right_eyeball": idx(template.part == PART_RIGHT_EYE),
        "mouth_interior": idx(pocket),
        "lip_outside_ring_upper": template.ring_upper.astype(np.int64),
        "lip_outside_ring_lower": template.ring_lower.astype(np.int64),
    }


# ----------------------------------------------------------------------------- assembly / io
# One model per process: it is deterministic and read-only (callers must not modify its arrays).
_CACHE: dict = {}


def build_head_model() -> SyntheticHeadModel:
    """Build (once per process; ~1 s) the synthetic FLAME-format head model. Deterministic."""
    if "model" not in _CACHE:
        template = build_head_template()
        shapedirs = np.concatenate([shape_basis(template, N_SHAPE), expression_basis(template, N_EXPR)], axis=2)
        _CACHE["model"] = SyntheticHeadModel(template=template, shapedirs=shapedirs,
                                             posedirs=pose_correctives(template),
                                             weights=_skinning_weights(template),
                                             j_regressor=_joint_regressor(template),
                                             masks=_region_masks(template))
    return _CACHE["model"]


def _write_pickle(obj, path: Path) -> None:
    """Pickle (protocol 4: protocol 2 would inflate binary arrays by ~50%), atomically."""
    with atomic_write(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)


def write_flame_files(model: SyntheticHeadModel, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``flame2023.pkl`` and ``FLAME_masks.pkl`` in the official layout.

    Args:
        model: the head model.
        out_dir: folder (created).

    Returns:
        (model path, masks path).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    joints = model.j_regressor @ model.v_template
    flame = {
        "f": model.faces.astype(np.uint32),
        "v_template": model.v_template.astype(np.float64),
        "shapedirs": model.shapedirs.astype(np.float64),
        "posedirs": model.posedirs.astype(np.float64),
        "J_regressor": scipy.sparse.csc_matrix(model.j_regressor),
        "weights": model.weights.astype(np.float64),
        "kintree_table": KINTREE_TABLE.copy(),
        "J": joints,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    model_path, masks_path = out_dir / FLAME_FILENAME, out_dir / MASKS_FILENAME
    _write_pickle(flame, model_path)
    _write_pickle({k: np.asarray(v) for k, v in model.masks.items()}, masks_path)
    return model_path, masks_path
