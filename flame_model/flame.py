"""The FLAME head model as a PyTorch module (docs/DESIGN.md section 2), with optional GaussianAvatars teeth.

Shapes: V vertices (5023 for FLAME, 5143 with teeth), F faces (9976 / 10144), K = 5 joints
(global, neck, jaw, left eye, right eye).

    v_shaped = v_template + shapedirs · [shape, expr] + static_offset
    joints   = J_regressor @ v_shaped
    verts    = LBS(v_shaped + posedirs · vec(R_neck,jaw,eyes - I)) + translation

``static_offset`` is part of ``v_shaped`` before the joints are regressed, as in the trackers
that produced the data (VHAP/GaussianAvatars add it to the template), so joints follow the
per-subject offsets too.

All model buffers are registered non-persistent: a FLAME instance inside a saved module does
not add ~30 MB of licensed FLAME data to its ``state_dict``; the model is always re-read from
the user's pickle.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .lbs import blend_shapes, lbs
from .paths import (FLAME_MASKS_FILENAME, FlameFileError, missing_masks_error, resolve_model_path, _abs)
from .pickle_io import load_pickle, to_array
from .teeth import (FLAME_LIP_RING_LOWER, FLAME_LIP_RING_UPPER, FLAME_NUM_VERTICES, TeethGeometry, build_teeth,
                    teeth_shapedirs)

__all__ = ["FLAME", "FlameData", "read_flame_model", "read_flame_masks", "FLAME_SHAPE_COMPONENTS",
           "NUM_JOINTS", "JOINT_NAMES", "RING_KEYS", "POSE_KEYS", "MOTION_KEYS"]

#: FLAME's shapedirs hold 300 identity components followed by the expression components.
FLAME_SHAPE_COMPONENTS = 300
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
# The per-frame FLAME parameters (a "motion") in the order FLAME.forward takes them; shape and the
# static offset are the subject's identity. Pose keys are axis-angle rotations and a translation.
POSE_KEYS = ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")
MOTION_KEYS = ("expr",) + POSE_KEYS


def frame_motion(motion: dict, row: int = 0) -> dict:
    """One frame of a motion: ``{key: (C,)}`` from row ``row`` of a batched motion ``{key: (B, C)}``
    (the keys it holds; :data:`MOTION_KEYS` when complete). What the avatar's frame takes
    (:meth:`scene.model.avatar.GaussianAvatar.splats`)."""
    return {k: v[row] for k, v in motion.items() if k in MOTION_KEYS}
NUM_JOINTS = len(JOINT_NAMES)
NECK_JOINT, JAW_JOINT = 1, 2
#: Keys of the masks pickle holding ordered lip rings (non-FLAME models); not vertex regions.
RING_KEYS = ("lip_outside_ring_upper", "lip_outside_ring_lower")
_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


@dataclass
class FlameData:
    """Plain float64/int64 arrays read from a FLAME pickle.

    Attributes:
        path: the file read.
        v_template: (V, 3); shapedirs: (V, 3, C) identity then expression; posedirs: (V, 3, 9(K-1));
        j_regressor: (K, V) dense; weights: (V, K); parents: (K,) with -1 for the root;
        faces: (F, 3) int64; num_shape / num_expr: identity / expression columns in ``shapedirs``.
    """

    path: Path
    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    num_shape: int
    num_expr: int


def _key_array(model: dict, key: str, path: Path) -> np.ndarray:
    try:
        return to_array(model[key])
    except TypeError as exc:
        raise FlameFileError(f"{path}: key '{key}' cannot be read as an array: {exc}.") from exc


def _check_shape(arr: np.ndarray, expected: Sequence[int | None], key: str, path: Path, meaning: str) -> None:
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise FlameFileError(f"{path}: key '{key}' has shape {tuple(arr.shape)}, expected {want} ({meaning}). "
                             f"Is this the official FLAME model file?")


def read_flame_model(path: str | os.PathLike) -> FlameData:
    """Read and validate a FLAME model pickle (FLAME 2023 ``flame2023.pkl`` or 2020 ``generic_model.pkl``).

    Args:
        path: existing pickle file.

    Returns:
        :class:`FlameData` with dense float64 arrays.

    Raises:
        FlameFileError: unreadable pickle, missing key or wrong shape (the message names file and key).
    """
    path = Path(path)
    model = load_pickle(path)
    if not isinstance(model, dict):
        raise FlameFileError(f"{path}: expected a pickled dict of FLAME arrays, found {type(model).__name__}.")
    missing = [k for k in _REQUIRED_KEYS if k not in model]
    if missing:
        raise FlameFileError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)} "
                             f"(a FLAME model needs {', '.join(_REQUIRED_KEYS)}). Is this the FLAME model "
                             f"file (not the masks or a landmark file)?")
    arrays = {k: _key_array(model, k, path) for k in _REQUIRED_KEYS}

    v_template = arrays["v_template"]
    _check_shape(v_template, (None, 3), "v_template", path, "template vertices")
    num_verts = v_template.shape[0]
    kintree = arrays["kintree_table"]
    _check_shape(kintree, (2, None), "kintree_table", path, "parent and joint ids per joint")
    num_joints = kintree.shape[1]
    if num_joints != NUM_JOINTS:
        raise FlameFileError(f"{path}: key 'kintree_table' describes {num_joints} joints, FLAME has {NUM_JOINTS} "
                             f"({', '.join(JOINT_NAMES)}).")
    _check_shape(arrays["shapedirs"], (num_verts, 3, None), "shapedirs", path, "V x 3 x (shape + expression)")
    _check_shape(arrays["posedirs"], (num_verts, 3, 9 * (num_joints - 1)), "posedirs", path,
                 "V x 3 x 9 per non-root joint")
    _check_shape(arrays["J_regressor"], (num_joints, num_verts), "J_regressor", path, "joints x V")
    _check_shape(arrays["weights"], (num_verts, num_joints), "weights", path, "V x joints")
    faces = arrays["f"]
    _check_shape(faces, (None, 3), "f", path, "triangles")
    if faces.size and (not np.issubdtype(faces.dtype, np.integer) and not np.all(faces == np.round(faces))):
        raise FlameFileError(f"{path}: key 'f' holds non-integer vertex indices.")
    faces = faces.astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= num_verts):
        raise FlameFileError(f"{path}: key 'f' indexes vertices outside 0..{num_verts - 1}.")

    # kintree_table[0] holds parents; the root's parent is -1 or uint32 max (4294967295) in FLAME.
    parents = kintree[0].astype(np.int64)
    joint_ids = kintree[1].astype(np.int64)
    parents[(parents < 0) | (parents >= num_joints)] = -1
    if not np.array_equal(joint_ids, np.arange(num_joints)) or parents[0] != -1 or \
            any(not (0 <= parents[k] < k) for k in range(1, num_joints)):
        raise FlameFileError(f"{path}: key 'kintree_table' {kintree.tolist()} is not a kinematic tree with the "
                             f"root first and parents before children.")

    shapedirs = arrays["shapedirs"].astype(np.float64)
    num_comp = shapedirs.shape[2]
    num_shape = min(num_comp, FLAME_SHAPE_COMPONENTS)
    return FlameData(path=path, v_template=v_template.astype(np.float64), shapedirs=shapedirs,
                     posedirs=arrays["posedirs"].astype(np.float64),
                     j_regressor=arrays["J_regressor"].astype(np.float64),
                     weights=arrays["weights"].astype(np.float64), parents=parents, faces=faces,
                     num_shape=num_shape, num_expr=num_comp - num_shape)


def _index_array(value, path: Path, key: str, num_verts: int) -> np.ndarray:
    try:
        arr = to_array(value)
    except TypeError as exc:
        raise FlameFileError(f"{path}: region '{key}' cannot be read as vertex indices: {exc}.") from exc
    if arr.dtype == bool and arr.ndim == 1 and arr.shape[0] == num_verts:
        return np.nonzero(arr)[0].astype(np.int64)
    arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(arr == np.round(arr)):
            raise FlameFileError(f"{path}: region '{key}' does not hold integer vertex indices.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_verts):
        raise FlameFileError(f"{path}: region '{key}' indexes vertices outside 0..{num_verts - 1}; do the masks "
                             f"belong to this model?")
    return arr


def read_flame_masks(path: str | os.PathLike, num_vertices: int
                     ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Read ``FLAME_masks.pkl``: a dict region -> vertex indices.

    Args:
        path: existing pickle file.
        num_vertices: vertex count of the base model (indices are checked against it).

    Returns:
        regions: name -> (n,) int64 vertex indices (ring keys excluded).
        rings: (upper, lower) ordered lip rings from ``lip_outside_ring_upper/lower`` or None.

    Raises:
        FlameFileError: not a dict, bad indices, or only one of the two ring keys.
    """
    path = Path(path)
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise FlameFileError(f"{path}: expected a pickled dict region -> vertex indices, found {type(data).__name__}.")
    regions = {str(k): _index_array(v, path, str(k), num_vertices) for k, v in data.items() if k not in RING_KEYS}
    present = [k for k in RING_KEYS if k in data]
    rings = None
    if len(present) == 1:
        raise FlameFileError(f"{path}: has '{present[0]}' but not its partner; lip rings need both {RING_KEYS}.")
    if present:
        upper, lower = (_index_array(data[k], path, k, num_vertices) for k in RING_KEYS)
        if upper.shape != lower.shape or upper.shape[0] < 2:
            raise FlameFileError(f"{path}: lip rings must have the same length (>= 2), got {upper.shape[0]} "
                                 f"upper and {lower.shape[0]} lower vertices.")
        rings = (upper, lower)
    return regions, rings


def _pad_columns(x: torch.Tensor, width: int, name: str) -> torch.Tensor:
    if x.shape[-1] > width:
        raise ValueError(f"{name} has {x.shape[-1]} components but this FLAME uses {width}; "
                         f"raise n_{name} or pass fewer components.")
    if x.shape[-1] < width:
        x = torch.cat([x, x.new_zeros(*x.shape[:-1], width - x.shape[-1])], dim=-1)
    return x


class FLAME(nn.Module):
    """FLAME with optional teeth.

    Args:
        model_path: FLAME pickle, a folder holding ``flame2023.pkl``, or None for the default
            ``flame_model/assets/flame/flame2023.pkl``.
        masks_path: ``FLAME_masks.pkl``; None looks beside the model and, if absent there, runs
            without regions (features needing one call :meth:`require_mask`, which explains where
            the file goes). An explicit path that does not exist is an error.
        n_shape: identity components used (<= those in the file, 300 for FLAME).
        n_expr: expression components used (<= those in the file, 100 for FLAME).
        add_teeth: append the 120 teeth vertices / 168 faces (docs/DESIGN.md section 2).

    Attributes:
        faces: (F, 3) int64 buffer.
        v_template: (V, 3); shapedirs: (V, 3, n_shape + n_expr); posedirs: (V, 3, 36);
        J_regressor: (5, V); lbs_weights: (V, 5) -- all non-persistent buffers in the module dtype.
        parents: list of 5 parent indices. num_base_vertices / num_base_faces: counts without teeth.
        teeth: :class:`~flame_model.teeth.TeethGeometry` or None.
        model_path, masks_path: resolved paths (masks_path None when no masks file was found).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, masks_path: str | os.PathLike | None = None,
                 n_shape: int = 300, n_expr: int = 100, add_teeth: bool = True):
        super().__init__()
        self.model_path = resolve_model_path(model_path)
        data = read_flame_model(self.model_path)
        if n_shape < 0 or n_expr < 0 or n_shape > data.num_shape or n_expr > data.num_expr:
            raise FlameFileError(
                f"{self.model_path} has {data.num_shape} shape and {data.num_expr} expression components, but "
                f"n_shape={n_shape} and n_expr={n_expr} were requested. Lower n_shape/n_expr to at most "
                f"{data.num_shape}/{data.num_expr} (model config), or use the full FLAME 2023 model "
                f"(300 shape + 100 expression components).")
        self.n_shape, self.n_expr = int(n_shape), int(n_expr)

        # Masks: explicit path must exist; the default one beside the model is optional.
        if masks_path is None:
            candidate = self.model_path.parent / FLAME_MASKS_FILENAME
            self.masks_path = candidate if candidate.is_file() else None
            self._expected_masks_path = candidate
        else:
            candidate = _abs(masks_path)
            if not candidate.is_file():
                raise missing_masks_error(candidate)
            self.masks_path = self._expected_masks_path = candidate
        num_base = data.v_template.shape[0]
        regions, rings = read_flame_masks(self.masks_path, num_base) if self.masks_path else ({}, None)
        self.lip_rings = rings

        shape_cols = np.arange(self.n_shape)
        expr_cols = data.num_shape + np.arange(self.n_expr)
        v_template = data.v_template
        shapedirs = data.shapedirs[:, :, np.concatenate([shape_cols, expr_cols])]
        posedirs, j_regressor, weights, faces = data.posedirs, data.j_regressor, data.weights, data.faces
        self.num_base_vertices, self.num_base_faces = num_base, faces.shape[0]

        self.teeth: TeethGeometry | None = None
        if add_teeth:
            ring_upper, ring_lower = self._teeth_rings(rings, num_base)
            teeth = build_teeth(v_template, ring_upper, ring_lower)
            nt = teeth.num_vertices
            v_template = np.concatenate([v_template, teeth.vertices], 0)
            shapedirs = np.concatenate([shapedirs, teeth_shapedirs(shapedirs, ring_upper, ring_lower, self.n_shape)], 0)
            posedirs = np.concatenate([posedirs, np.zeros((nt,) + posedirs.shape[1:])], 0)
            j_regressor = np.concatenate([j_regressor, np.zeros((j_regressor.shape[0], nt))], 1)
            teeth_weights = np.zeros((nt, weights.shape[1]))
            teeth_weights[teeth.upper - num_base, NECK_JOINT] = 1.0  # upper teeth move with the skull
            teeth_weights[teeth.lower - num_base, JAW_JOINT] = 1.0
            weights = np.concatenate([weights, teeth_weights], 0)
            faces = np.concatenate([faces, teeth.faces], 0)
            self.teeth = teeth
        num_verts = v_template.shape[0]

        dtype = torch.get_default_dtype()
        # float64 masters (CPU, not buffers): .double() restores full precision instead of
        # up-casting already-rounded float32 values (see _apply).
        self._float64_masters: dict[str, torch.Tensor] = {}
        for name, arr in (("v_template", v_template), ("shapedirs", shapedirs), ("posedirs", posedirs),
                          ("J_regressor", j_regressor), ("lbs_weights", weights)):
            master = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float64)
            self._float64_masters[name] = master
            self.register_buffer(name, master if dtype == torch.float64 else master.to(dtype), persistent=False)
        self.register_buffer("faces", torch.as_tensor(faces, dtype=torch.long), persistent=False)
        self.parents = [int(p) for p in data.parents]

        # Region masks as buffers so .to(device) moves them; exposed as dicts by the properties.
        vmasks: dict[str, np.ndarray] = {}
        for name, idx in regions.items():
            m = np.zeros(num_verts, dtype=bool)
            m[idx] = True  # teeth rows (beyond the base count) stay False
            vmasks[name] = m
        if self.teeth is not None:
            m = np.zeros(num_verts, dtype=bool)
            m[num_base:] = True
            vmasks["teeth"] = m
        self._mask_names = list(vmasks)
        for i, name in enumerate(self._mask_names):
            vm = torch.from_numpy(vmasks[name])
            self.register_buffer(f"_vmask_{i}", vm, persistent=False)
            self.register_buffer(f"_fmask_{i}", vm[self.faces].all(dim=-1), persistent=False)

    # ------------------------------------------------------------------ construction helpers
    def _teeth_rings(self, rings, num_base: int) -> tuple[np.ndarray, np.ndarray]:
        if rings is not None:
            return rings
        if num_base == FLAME_NUM_VERTICES:
            return np.asarray(FLAME_LIP_RING_UPPER), np.asarray(FLAME_LIP_RING_LOWER)
        masks_note = (f"the masks file {self.masks_path} has no" if self.masks_path is not None
                      else f"no masks file was found at {self._expected_masks_path} to provide")
        raise FlameFileError(
            f"{self.model_path}: cannot add teeth: the model has {num_base} vertices (not FLAME's "
            f"{FLAME_NUM_VERTICES}, whose lip rings are built in) and {masks_note} "
            f"'{RING_KEYS[0]}'/'{RING_KEYS[1]}' lip rings. Provide them in the masks pickle or use add_teeth=False.")

    def _apply(self, fn, *args, **kwargs):
        """Module conversions (.to/.double/.cuda): model buffers landing in float64 are refilled
        from the float64 masters, so float64 evaluation is exact whatever the previous dtype."""
        super()._apply(fn, *args, **kwargs)
        for name, master in self._float64_masters.items():
            buf = self._buffers.get(name)
            if buf is not None and buf.dtype == torch.float64:
                self._buffers[name] = master.to(buf.device)
        return self

    # ------------------------------------------------------------------ properties
    @property
    def num_vertices(self) -> int:
        """V: vertices including teeth."""
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        """F: faces including teeth."""
        return int(self.faces.shape[0])

    @property
    def vertex_masks(self) -> dict[str, torch.Tensor]:
        """Region name -> (V,) bool (teeth vertices False except in ``teeth``)."""
        return {n: getattr(self, f"_vmask_{i}") for i, n in enumerate(self._mask_names)}

    @property
    def face_masks(self) -> dict[str, torch.Tensor]:
        """Region name -> (F,) bool; a face is in a region when all three of its vertices are."""
        return {n: getattr(self, f"_fmask_{i}") for i, n in enumerate(self._mask_names)}

    def require_mask(self, name: str) -> torch.Tensor:
        """Vertex mask of a region that a feature cannot do without.

        Args:
            name: region name, e.g. ``"face"``.

        Returns:
            (V,) bool.

        Raises:
            FlameMasksMissingError: no masks file was found (message: where to put it).
            FlameFileError: the masks file lacks the region.
        """
        masks = self.vertex_masks
        if name in masks:
            return masks[name]
        self.require_masks_file(f"region '{name}'")
        raise FlameFileError(f"{self.masks_path}: has no region '{name}' (available: {', '.join(sorted(masks))}).")

    def require_masks_file(self, needed_for: str) -> None:
        """Raise FlameMasksMissingError (where to put the file) when no masks file was found.

        Args:
            needed_for: what needs the masks, for the message (e.g. "feature lines").
        """
        if self.masks_path is None:
            raise missing_masks_error(self._expected_masks_path, needed_for=needed_for)

    def require_face_mask(self, name: str) -> torch.Tensor:
        """Like :meth:`require_mask` but (F,) bool over faces."""
        self.require_mask(name)
        return self.face_masks[name]

    # ------------------------------------------------------------------ evaluation
    def _prepare(self, x: torch.Tensor | None, batch: int, width: int, name: str, pad: bool = False) -> torch.Tensor:
        """(width,), (1, width) or (B, width) -> (B, width) in the module dtype/device; None -> zeros."""
        ref = self.v_template
        if x is None:
            return ref.new_zeros(batch, width)
        x = torch.as_tensor(x).to(dtype=ref.dtype, device=ref.device)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[0] not in (1, batch):
            raise ValueError(f"FLAME input '{name}' has shape {tuple(x.shape)}, expected ({batch}, {width}) "
                             f"or ({width},)")
        if pad:
            x = _pad_columns(x, width, name)
        elif x.shape[1] != width:
            raise ValueError(f"FLAME input '{name}' has {x.shape[1]} columns, expected {width}")
        return x.expand(batch, width)

    def _static_offset(self, static_offset: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """(V, 3), (1, V, 3) or (B, V, 3), or base-V rows when teeth are on -> (B or 1, V, 3)."""
        if static_offset is None:
            return None
        ref = self.v_template
        off = torch.as_tensor(static_offset).to(dtype=ref.dtype, device=ref.device)
        if off.dim() == 2:
            off = off.unsqueeze(0)
        if off.dim() != 3 or off.shape[-1] != 3 or off.shape[0] not in (1, batch):
            raise ValueError(f"static_offset has shape {tuple(off.shape)}, expected ({batch} or 1, "
                             f"{self.num_vertices}, 3)")
        if off.shape[1] == self.num_base_vertices and self.num_vertices != self.num_base_vertices:
            # Offsets tracked without teeth: the teeth rows get no offset.
            off = torch.cat([off, off.new_zeros(off.shape[0], self.num_vertices - off.shape[1], 3)], dim=1)
        if off.shape[1] != self.num_vertices:
            raise ValueError(f"static_offset has {off.shape[1]} rows, expected {self.num_vertices}"
                             f" (or {self.num_base_vertices} without teeth)")
        return off

    def _shaped(self, shape: torch.Tensor, expr: torch.Tensor, static_offset: torch.Tensor | None) -> torch.Tensor:
        v = self.v_template + blend_shapes(torch.cat([shape, expr], dim=1), self.shapedirs)
        return v if static_offset is None else v + static_offset

    @staticmethod
    def _batch_size(*params, static_offset=None) -> int:
        """Largest leading dim among the (B, C) parameters and a (B, V, 3) static offset."""
        batch = 1
        for t in params:
            if t is not None:
                t = torch.as_tensor(t)
                if t.dim() >= 2:
                    batch = max(batch, int(t.shape[0]))
        if static_offset is not None:
            off = torch.as_tensor(static_offset)
            if off.dim() == 3:
                batch = max(batch, int(off.shape[0]))
        return batch

    def motion_vertices(self, shape: torch.Tensor, motion: dict, static_offset: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """Posed vertices (B, V, 3) of an identity (``shape``, ``static_offset`` as in :meth:`forward`)
        driven by a motion: a dict holding :data:`MOTION_KEYS`, each (B, ...) as :meth:`forward` takes it."""
        return self(shape, *(motion[k] for k in MOTION_KEYS), static_offset=static_offset)

    def forward(self, shape: torch.Tensor, expr: torch.Tensor | None, rotation: torch.Tensor | None,
                neck_pose: torch.Tensor | None, jaw_pose: torch.Tensor | None, eyes_pose: torch.Tensor | None,
                translation: torch.Tensor | None, static_offset: torch.Tensor | None = None, *,
                return_joints: bool = False):
        """Posed FLAME vertices.

        Args:
            shape: (B, n_shape) or (n_shape,) identity (fewer columns are zero-padded).
            expr: (B, n_expr') with n_expr' <= n_expr (zero-padded), or None.
            rotation: (B, 3) global axis-angle (about the root joint), or None.
            neck_pose: (B, 3), jaw_pose: (B, 3) axis-angle, or None.
            eyes_pose: (B, 6) left eye then right eye axis-angle, or None.
            translation: (B, 3) added after skinning, or None.
            static_offset: (B or 1, V, 3) or (V, 3) added to the shaped template before skinning;
                with teeth, (.., 5023, 3) is zero-padded for the teeth rows.
            return_joints: also return the posed joints.

        Any (1, C) or (C,) input broadcasts over B. Inputs are cast to the module dtype/device.

        Returns:
            verts: (B, V, 3); with ``return_joints`` also joints: (B, 5, 3) (translated).
        """
        batch = self._batch_size(shape, expr, rotation, neck_pose, jaw_pose, eyes_pose, translation,
                                 static_offset=static_offset)
        shape_ = self._prepare(shape, batch, self.n_shape, "shape", pad=True)
        expr_ = self._prepare(expr, batch, self.n_expr, "expr", pad=True)
        pose = torch.cat([self._prepare(rotation, batch, 3, "rotation"), self._prepare(neck_pose, batch, 3, "neck_pose"),
                          self._prepare(jaw_pose, batch, 3, "jaw_pose"), self._prepare(eyes_pose, batch, 6, "eyes_pose")],
                         dim=1)
        trans = self._prepare(translation, batch, 3, "translation")
        v_shaped = self._shaped(shape_, expr_, self._static_offset(static_offset, batch))
        if v_shaped.shape[0] != batch:
            v_shaped = v_shaped.expand(batch, -1, -1)
        verts, joints = lbs(v_shaped, pose, self.J_regressor, self.posedirs, self.parents, self.lbs_weights)
        verts = verts + trans[:, None]
        if return_joints:
            return verts, joints + trans[:, None]
        return verts

    def canonical_vertices(self, shape: torch.Tensor, static_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Canonical mesh: identity shape + static offset, zero expression and pose, no translation.

        Args:
            shape: (B, n_shape) or (n_shape,).
            static_offset: (B or 1, V, 3), (V, 3) or None (base-V rows zero-padded with teeth).

        Returns:
            (B, V, 3).
        """
        batch = self._batch_size(shape, static_offset=static_offset)
        shape_ = self._prepare(shape, batch, self.n_shape, "shape", pad=True)
        v = self._shaped(shape_, shape_.new_zeros(batch, self.n_expr), self._static_offset(static_offset, batch))
        return v.expand(batch, -1, -1) if v.shape[0] != batch else v

    def joints(self, shape: torch.Tensor, expr: torch.Tensor | None = None,
               static_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Rest-pose joint locations (global, neck, jaw, left eye, right eye).

        Args:
            shape: (B, n_shape) or (n_shape,); expr: (B, n_expr') or None; static_offset as in forward.

        Returns:
            (B, 5, 3).
        """
        batch = self._batch_size(shape, expr, static_offset=static_offset)
        shape_ = self._prepare(shape, batch, self.n_shape, "shape", pad=True)
        expr_ = self._prepare(expr, batch, self.n_expr, "expr", pad=True)
        v = self._shaped(shape_, expr_, self._static_offset(static_offset, batch))
        return torch.einsum("kv,bvd->bkd", self.J_regressor, v.expand(batch, -1, -1))

    def extra_repr(self) -> str:
        return (f"model={self.model_path}, V={self.num_vertices}, F={self.num_faces}, n_shape={self.n_shape}, "
                f"n_expr={self.n_expr}, teeth={self.teeth is not None}, masks={len(self._mask_names)}")
