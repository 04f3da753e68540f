"""NeRSemble subject reader (the GaussianAvatars / VHAP export format; docs/DESIGN.md section 1),
registered in :mod:`scene.data.datasets` as the ``nersemble`` format; it builds :class:`scene.data.subject.Subject`.

A *subject* folder holds ``transforms_{train,val,test}.json`` and ``canonical_flame_param.npz``.
Frame paths in the JSONs are relative to the JSON's folder; a *union* folder's frames point into
sibling sequence folders (``../306_EMO-1_.../images/00000_00.png``). Each frame record carries
the camera (OpenGL camera-to-world ``transform_matrix``, per-frame or shared intrinsics), the
image / fg-mask paths and the FLAME parameter file of its timestep.

What :func:`load_subject` does eagerly (so that a broken export fails at start-up, not hours into
training): parse and validate every JSON of the requested splits, check that every referenced
image, mask and FLAME file exists (one error naming the first missing file and the count), load
and validate every per-timestep FLAME npz and the canonical npz. Images and masks are decoded
lazily by :meth:`Subject.load_image` / :meth:`Subject.load_mask` through a byte-bounded LRU cache.

Every error a user can cause raises :class:`utils.errors.MissingFileError` or
:class:`utils.errors.InputFileError` (both :class:`utils.errors.UserFacingError`) whose message
names the file and the field at fault.

Camera conventions are those of :mod:`scene.data.cameras` (OpenCV world-to-camera ``viewmat``, pixel
``K`` with pixel centres at +0.5, ``fl_x, fl_y, cx, cy`` honoured exactly).
"""
from __future__ import annotations

import json
import math
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from scene.data.cameras import opengl_c2w_to_opencv_w2c, scale_intrinsics, scaled_size
from scene.data.subject import FLAME_TIMESTEP_KEYS, CameraFrame, Subject, frames_from_arrays, frames_to_arrays
from scene.data.subject_cache import content_digest, pack_strings, unpack_strings
from utils.errors import InputFileError, MissingFileError, UserFacingError
from utils.image_io import DEFAULT_CACHE_BYTES, ImageCache

__all__ = ["load_subject", "load_sequence", "is_nersemble_folder", "CANONICAL_FILENAME"]

PathLike = Union[str, os.PathLike]

CANONICAL_FILENAME = "canonical_flame_param.npz"
DEFAULT_SPLITS = ("train", "val", "test")

#: Per-frame fields every frame record must have.
REQUIRED_FRAME_FIELDS = ("transform_matrix", "file_path", "timestep_index", "camera_index", "flame_param_path")
#: Intrinsics: per-frame value if present, else the shared top-level value; one is required.
INTRINSIC_FIELDS = ("fl_x", "fl_y", "cx", "cy", "w", "h")

N_SHAPE = 300

# Tolerances for the rigidity check of transform_matrix. Exports are float32 and rigid; anything
# beyond these is a scaled/sheared/garbled matrix that would silently distort every projection.
_ORTHO_TOL = 1e-3
_BOTTOM_ROW_TOL = 1e-6


# ============================================================================================
# Small validation helpers
# ============================================================================================
def _stat_line(path: str) -> Optional[str]:
    """A file's or folder's (size, modification time in ns, inode), or None if it cannot be ``stat`` ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"


class _Files:
    """Existence checks through one ``os.listdir`` per directory (tens of thousands of frames
    would otherwise cost as many ``stat`` calls, mostly in the same few folders)."""

    def __init__(self):
        self._dirs: Dict[str, frozenset] = {}
        self.folder_stats: Dict[str, Optional[str]] = {}

    def exists(self, p: Union[str, Path]) -> bool:
        d, name = os.path.split(os.fspath(p))
        names = self._dirs.get(d)
        if names is None:
            # Taken before the listing: a file added or removed after it moves the folder's
            # modification time past this (what a cached parse is checked against).
            self.folder_stats[d] = _stat_line(d or ".")
            try:
                names = frozenset(os.listdir(d or "."))
            except OSError:
                names = frozenset()
            self._dirs[d] = names
        return name in names


    def resolve(self, base: Path, rel: str, add_png: bool) -> Tuple[Path, bool]:
        """Resolve a JSON path relative to ``base``; try ``rel`` then ``rel + '.png'``.

        The returned path is lexically normalised (``a/UNION/../seq/x`` -> ``a/seq/x``) unless
        only the un-normalised spelling exists (a symlinked folder, where ``..`` differs).
        Returns ``(path, exists)``; for a missing file, the path as written (normalised).
        """
        # String operations: pathlib's parsing dominated the load time of large unions.
        raw = os.path.join(os.fspath(base), rel)
        candidates = [raw]
        if add_png and not raw.lower().endswith(".png"):
            candidates.append(raw + ".png")
        for c in candidates:
            n = os.path.normpath(c)
            if self.exists(n):
                return Path(n), True
            if n != c and self.exists(c):
                return Path(c), True
        return Path(os.path.normpath(raw)), False


def _describe(value) -> str:
    s = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _number(value, json_path: Path, where: str, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputFileError(f"{json_path}: field '{name}' ({where}) must be a finite number, got {_describe(value)}")
    if positive and value <= 0:
        raise InputFileError(f"{json_path}: field '{name}' ({where}) must be > 0, got {value}")
    return float(value)


def _integer(value, json_path: Path, where: str, name: str, minimum: Optional[int] = None) -> int:
    ok = not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    )
    if not ok:
        raise InputFileError(f"{json_path}: field '{name}' ({where}) must be an integer, got {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InputFileError(f"{json_path}: field '{name}' ({where}) must be >= {minimum}, got {value}")
    return value


def _path_field(value, json_path: Path, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputFileError(
            f"{json_path}: field '{name}' ({where}) must be a non-empty path string relative to "
            f"{json_path.parent}, got {_describe(value)}"
        )
    return value


def _transform_matrix(value, json_path: Path, where: str) -> np.ndarray:
    """Validate a 4x4 rigid camera-to-world matrix given as a nested list -> float64 (4, 4)."""
    name = "transform_matrix"
    if isinstance(value, list):
        if all(isinstance(r, list) for r in value):
            got = f"{len(value)} rows of lengths {[len(r) for r in value]}"
        else:
            got = f"a list of length {len(value)} that is not a list of rows"
    else:
        got = f"a {type(value).__name__}"
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(r, list) and len(r) == 4 for r in value)):
        raise InputFileError(
            f"{json_path}: field '{name}' ({where}) must be a 4x4 nested list (4 rows of 4 numbers: "
            f"the OpenGL camera-to-world matrix), got {got}"
        )
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputFileError(f"{json_path}: field '{name}' ({where}) must contain only numbers, got {_describe(value)}") from None
    if not np.isfinite(m).all():
        raise InputFileError(f"{json_path}: field '{name}' ({where}) contains NaN or infinity")
    if np.abs(m[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > _BOTTOM_ROW_TOL:
        raise InputFileError(f"{json_path}: field '{name}' ({where}) must have last row [0, 0, 0, 1], got {m[3].tolist()}")
    R = m[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > _ORTHO_TOL or np.linalg.det(R) < 0:
        raise InputFileError(
            f"{json_path}: field '{name}' ({where}): the 3x3 rotation part is not a rotation "
            f"(scaled, sheared or mirrored); expected a rigid camera-to-world matrix"
        )
    return m


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(
            f"{path}: file not found. A subject folder needs transforms_train.json, "
            f"transforms_val.json and transforms_test.json (an empty split is \"frames\": [])"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: not UTF-8 text ({e}); expected a JSON file") from e
    except OSError as e:
        raise InputFileError(f"{path}: cannot read file ({e})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: the top level must be a JSON object with a 'frames' list, got {type(data).__name__}")
    return data


# ============================================================================================
# JSON -> frames
# ============================================================================================
@dataclass
class _Missing:
    kind: str  # "image", "mask", "FLAME parameter file"
    path: Path
    json_path: Path
    where: str
    field: str


def _parse_split(
    json_path: Path, split: str, resolution_scale: float, files: _Files, missing: List[_Missing],
    progress: bool = False,
) -> List[CameraFrame]:
    """Parse one ``transforms_*.json`` into frames; missing files are appended to ``missing``."""
    data = _read_json(json_path)
    if "frames" not in data:
        raise InputFileError(
            f"{json_path}: missing top-level field 'frames' (the list of per-frame camera records; "
            f"an empty split is \"frames\": [])"
        )
    records = data["frames"]
    if not isinstance(records, list):
        raise InputFileError(f"{json_path}: top-level field 'frames' must be a list, got {type(records).__name__}")
    base = json_path.parent

    c2ws: List[np.ndarray] = []
    intrinsics: List[Tuple[float, float, float, float, float, float]] = []
    partial: List[dict] = []
    bar = tqdm(records, desc=f"reading {json_path.name}", unit="frame", disable=not progress, leave=False)
    for i, rec in enumerate(bar):
        where = f"frames[{i}]"
        if not isinstance(rec, dict):
            raise InputFileError(f"{json_path}: {where} must be a JSON object, got {type(rec).__name__}")
        for name in REQUIRED_FRAME_FIELDS:
            if name not in rec:
                raise InputFileError(
                    f"{json_path}: {where} is missing field '{name}' (every frame needs "
                    f"{', '.join(REQUIRED_FRAME_FIELDS)})"
                )
        # Intrinsics: the frame's own value wins over the shared top-level one.
        vals = {}
        for name in INTRINSIC_FIELDS:
            if name in rec:
                value, src = rec[name], where
            elif name in data:
                value, src = data[name], "top level"
            else:
                raise InputFileError(
                    f"{json_path}: field '{name}' is missing from {where} and from the top level "
                    f"(a per-frame value overrides the shared top-level one; one of them is required)"
                )
            if name in ("w", "h"):
                vals[name] = _integer(value, json_path, src, name, minimum=1)
            else:
                vals[name] = _number(value, json_path, src, name, positive=name.startswith("fl_"))
        c2ws.append(_transform_matrix(rec["transform_matrix"], json_path, where))
        intrinsics.append(tuple(vals[n] for n in ("fl_x", "fl_y", "cx", "cy", "w", "h")))

        timestep = _integer(rec["timestep_index"], json_path, where, "timestep_index", minimum=0)
        camera_index = _integer(rec["camera_index"], json_path, where, "camera_index", minimum=0)
        camera_id = rec.get("camera_id")
        camera_id = None if camera_id is None else str(camera_id)

        image_path, ok = files.resolve(base, _path_field(rec["file_path"], json_path, where, "file_path"), add_png=True)
        if not ok:
            missing.append(_Missing("image", image_path, json_path, where, "file_path"))

        mask_rel = rec.get("fg_mask_path")
        if mask_rel is not None:
            mask_path, ok = files.resolve(base, _path_field(mask_rel, json_path, where, "fg_mask_path"), add_png=True)
            if not ok:
                missing.append(_Missing("mask", mask_path, json_path, where, "fg_mask_path"))
        else:
            # No field: GA/VHAP keep mattes in fg_masks/ beside images/ under the same name.
            mask_path = None
            if image_path.parent.name == "images":
                candidate = image_path.parent.parent / "fg_masks" / image_path.name
                if files.exists(candidate):
                    mask_path = candidate

        flame_path, ok = files.resolve(
            base, _path_field(rec["flame_param_path"], json_path, where, "flame_param_path"), add_png=False
        )
        if not ok:
            missing.append(_Missing("FLAME parameter file", flame_path, json_path, where, "flame_param_path"))

        partial.append(
            dict(
                split=split,
                image_path=image_path,
                mask_path=mask_path,
                timestep=timestep,
                camera_index=camera_index,
                camera_id=camera_id,
                flame_param_path=flame_path,
                image_name=f"{timestep:05d}_{camera_index:02d}",
                json_path=json_path,
                frame_index=i,
            )
        )

    if not partial:
        return []
    # Batched camera conversion (one inverse for the whole split).
    c2w = torch.from_numpy(np.stack(c2ws))  # (N, 4, 4) float64
    viewmats = opengl_c2w_to_opencv_w2c(c2w).to(torch.float32)  # (N, 4, 4)
    centers = c2w[:, :3, 3].to(torch.float32)  # (N, 3): the c2w translation in either convention
    frames = []
    for n, (p, (fx, fy, cx, cy, w, h)) in enumerate(zip(partial, intrinsics)):
        new_w, new_h = scaled_size(w, h, resolution_scale)
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
        if (new_w, new_h) != (w, h):
            K = scale_intrinsics(K, new_w / w, new_h / h)
        frames.append(
            CameraFrame(
                width=new_w,
                height=new_h,
                K=K.to(torch.float32),
                viewmat=viewmats[n].clone(),
                camera_center=centers[n].clone(),
                orig_width=w,
                orig_height=h,
                **p,
            )
        )
    return frames


def _raise_missing(root: Path, missing: List[_Missing]) -> None:
    # The same FLAME file is referenced by every camera of a timestep: count files, not references.
    unique: Dict[Path, _Missing] = {}
    for m in missing:
        unique.setdefault(m.path, m)
    first = next(iter(unique.values()))
    n = len(unique)
    kinds = {}
    for m in unique.values():
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    breakdown = ", ".join(f"{v} {k}{'s' if v > 1 else ''}" for k, v in kinds.items())
    raise MissingFileError(
        f"{n} file{'s' if n > 1 else ''} referenced by the subject at {root} "
        f"{'are' if n > 1 else 'is'} missing ({breakdown}); first: {first.kind} {first.path} "
        f"(field '{first.field}' of {first.where} in {first.json_path}). Paths are relative to the "
        f"JSON's folder; re-export the subject or restore the files"
    )


# ============================================================================================
# FLAME npz files
# ============================================================================================
def _open_npz(path: Path):
    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MissingFileError(f"{path}: FLAME parameter file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputFileError(f"{path}: not a readable .npz archive ({e}); re-export the FLAME parameters") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise InputFileError(f"{path}: expected an .npz archive of FLAME parameters, found a single .npy array")
    return f


def _get(f, path: Path, key: str, required: bool = True) -> Optional[np.ndarray]:
    if key not in f.files:
        if not required:
            return None
        raise InputFileError(f"{path}: missing key '{key}' (keys present: {sorted(f.files)})")
    try:
        arr = f[key]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputFileError(f"{path}: cannot read key '{key}' ({e})") from e
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputFileError(f"{path}: key '{key}' must be numeric, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputFileError(f"{path}: key '{key}' contains NaN or infinity")
    return arr


def _vector(arr: np.ndarray, path: Path, key: str, n: int) -> np.ndarray:
    """Accept ``(1, n)`` or ``(n,)``; return float32 ``(n,)``."""
    if arr.shape not in ((1, n), (n,)):
        raise InputFileError(f"{path}: key '{key}' has shape {tuple(arr.shape)}, expected (1, {n})")
    return arr.reshape(n).astype(np.float32)


def _offsets(arr: np.ndarray, path: Path, key: str, n_vertices: Optional[int] = None) -> np.ndarray:
    """Accept ``(1, V, 3)`` or ``(V, 3)``; return float32 ``(V, 3)``."""
    ok = (arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[2] == 3) or (arr.ndim == 2 and arr.shape[1] == 3)
    v = arr.shape[-2] if ok else None
    if not ok or (n_vertices is not None and v != n_vertices):
        expected = f"(1, {n_vertices if n_vertices is not None else 'V'}, 3)"
        raise InputFileError(f"{path}: key '{key}' has shape {tuple(arr.shape)}, expected {expected}")
    return arr.reshape(v, 3).astype(np.float32)


def _load_timestep_params(timesteps: List[int], paths: Dict[int, Path], progress: bool = False) -> Dict[str, torch.Tensor]:
    """Load and stack the per-timestep FLAME parameters over ``timesteps`` (rows in that order)."""
    stacks: Dict[str, List[np.ndarray]] = {k: [] for k in FLAME_TIMESTEP_KEYS}
    dyn: List[Optional[np.ndarray]] = []
    for t in tqdm(timesteps, desc="reading FLAME parameters", unit="timestep", disable=not progress, leave=False):
        path = paths[t]
        with _open_npz(path) as f:
            for key, n in FLAME_TIMESTEP_KEYS.items():
                stacks[key].append(_vector(_get(f, path, key), path, key, n))
            d = _get(f, path, "dynamic_offset", required=False)
            dyn.append(None if d is None else _offsets(d, path, "dynamic_offset"))
    out = {k: torch.from_numpy(np.stack(v)) if v else torch.zeros(0, FLAME_TIMESTEP_KEYS[k]) for k, v in stacks.items()}
    present = [d is not None for d in dyn]
    if any(present):
        # Either every timestep has a dynamic offset or none: a partial set means a broken export.
        ref_i = present.index(True)
        for t, d in zip(timesteps, dyn):
            if d is None:
                raise InputFileError(
                    f"{paths[t]}: missing key 'dynamic_offset' (other timesteps, e.g. {paths[timesteps[ref_i]]}, have it)"
                )
            if d.shape != dyn[ref_i].shape:
                raise InputFileError(
                    f"{paths[t]}: key 'dynamic_offset' has shape (1, {d.shape[0]}, 3), expected "
                    f"(1, {dyn[ref_i].shape[0]}, 3) like {paths[timesteps[ref_i]]}"
                )
        out["dynamic_offset"] = torch.from_numpy(np.stack(dyn))
    return out


def _load_canonical(path: Path) -> Dict[str, torch.Tensor]:
    """The canonical npz as tensors; known keys are shape-checked."""
    out: Dict[str, torch.Tensor] = {}
    with _open_npz(path) as f:
        for key in f.files:
            arr = _get(f, path, key)
            if key == "shape":
                _vector(arr, path, key, N_SHAPE)
            elif key in ("static_offset", "dynamic_offset"):
                _offsets(arr, path, key)
            elif key in FLAME_TIMESTEP_KEYS:
                _vector(arr, path, key, FLAME_TIMESTEP_KEYS[key])
            t = torch.from_numpy(np.ascontiguousarray(arr))
            out[key] = t.to(torch.float32) if t.is_floating_point() else t
    return out


# ============================================================================================
# Loading
# ============================================================================================
def _check_scale(resolution_scale) -> float:
    if isinstance(resolution_scale, bool) or not isinstance(resolution_scale, (int, float)) or not (
        math.isfinite(resolution_scale) and resolution_scale > 0
    ):
        raise UserFacingError(f"resolution_scale must be a finite number > 0, got {resolution_scale!r}")
    return float(resolution_scale)


def _parse_frames(root: Path, split_files: Dict[str, Path], resolution_scale: float, progress: bool):
    """Every split's frames (one error for the files that are missing), the FLAME file of each
    timestep, and the :class:`_Files` whose folder listings answered the existence checks."""
    files = _Files()
    missing: List[_Missing] = []
    frames: Dict[str, List[CameraFrame]] = {}
    for split, json_path in split_files.items():
        frames[split] = _parse_split(json_path, split, resolution_scale, files, missing, progress)
    if missing:
        _raise_missing(root, missing)

    # One FLAME file per timestep; two different files for the same timestep is a broken export.
    flame_paths: Dict[int, Path] = {}
    first_ref: Dict[int, CameraFrame] = {}
    for fs in frames.values():
        for f in fs:
            prev = flame_paths.setdefault(f.timestep, f.flame_param_path)
            first_ref.setdefault(f.timestep, f)
            if prev != f.flame_param_path:
                g = first_ref[f.timestep]
                raise InputFileError(
                    f"{f.json_path}: field 'flame_param_path' of frames[{f.frame_index}] is "
                    f"{f.flame_param_path}, but timestep_index {f.timestep} already uses {prev} "
                    f"(frames[{g.frame_index}] of {g.json_path}); a timestep has exactly one FLAME file"
                )
    return frames, flame_paths, files


_PARSE_KIND = "parsed_subjects"
#: Version of what :func:`_parse` makes of the same files: bump it when a change of the parsing
#: would give other frames or FLAME stacks (the cache keys include it).
_PARSE_FORMAT = 1


def _parse(root: Path, split_files: Dict[str, Path], resolution_scale: float, progress: bool):
    """The files' part of loading: every split's frames (files checked to exist) and the stacked
    FLAME parameters. Returns ``(frames, timesteps, flame_paths, flame, (signature, folders))``:
    the signature (:func:`_files_signature`) covers every file and folder the result depends on,
    each ``stat`` ed before it was read (a change while loading then misses next time), or is None
    when one cannot be ``stat`` ed; ``folders`` are the folders whose listings were consulted."""
    json_stats = [_stat_line(os.fspath(p)) for p in split_files.values()]
    frames, flame_paths, files = _parse_frames(root, split_files, resolution_scale, progress)
    timesteps = sorted(flame_paths)
    paths = [os.fspath(flame_paths[t]) for t in timesteps]
    flame_stats = [_stat_line(p) for p in paths]
    flame = _load_timestep_params(timesteps, flame_paths, progress)
    folders = list(files.folder_stats)
    stats = json_stats + list(files.folder_stats.values()) + flame_stats
    signature = None if None in stats else _files_signature(stats)
    return frames, timesteps, flame_paths, flame, (signature, folders)


def _files_signature(stats: Sequence[str]) -> str:
    """Digest of the :func:`_stat_line` of the transforms JSONs, the folders whose listings said
    which files exist, and the FLAME files, in that order: what a parsed subject depends on."""
    return content_digest(["parsed subject files", list(stats)])


def _current_signature(split_files: Dict[str, Path], folders: Sequence[str], flame_paths: Sequence[str]) -> Optional[str]:
    stats = [_stat_line(os.fspath(p)) for p in split_files.values()]
    stats += [_stat_line(d or ".") for d in folders] + [_stat_line(p) for p in flame_paths]
    return None if None in stats else _files_signature(stats)


def _parse_key(split_files: Dict[str, Path], resolution_scale: float) -> str:
    """Which parse a cache entry holds: the JSONs (absolute paths, by split), the scale, the code."""
    return content_digest(["nersemble parse", _PARSE_FORMAT, float(resolution_scale),
                           [[split, os.path.abspath(path)] for split, path in split_files.items()]])


def _parsed(root: Path, split_files: Dict[str, Path], resolution_scale: float, progress: bool, cache):
    """:func:`_parse`'s ``(frames, timesteps, flame_paths, flame)``, from ``cache`` (a
    :class:`scene.data.subject_cache.SubjectCache`) when it holds the parse of these JSONs at this
    scale and no JSON, FLAME file or listed folder changed since (their ``stat``: size,
    modification time, inode); else parsed and stored there. ``cache`` None: always parsed."""
    if cache is None:
        return _parse(root, split_files, resolution_scale, progress)[:4]
    key = _parse_key(split_files, resolution_scale)
    stored = cache.read_arrays(_PARSE_KIND, key)
    if stored is not None:
        restored = _restore_parse(stored, split_files)
        if restored is not None:
            return restored
    frames, timesteps, flame_paths, flame, (signature, folders) = _parse(root, split_files, resolution_scale, progress)
    if signature is not None:
        arrays = {"format": np.array(_PARSE_FORMAT), "signature": pack_strings([signature]),
                  "splits": pack_strings(list(frames)), "n_folders": np.array(len(folders)),
                  "folders": pack_strings(folders), "timesteps": np.array(timesteps, dtype=np.int64),
                  "flame_paths": pack_strings([os.fspath(flame_paths[t]) for t in timesteps])}
        for i, fs in enumerate(frames.values()):
            arrays.update(frames_to_arrays(fs, f"split{i}_"))
        arrays.update({f"param_{k}": v.numpy() for k, v in flame.items()})
        cache.write_arrays(_PARSE_KIND, key, arrays)
    return frames, timesteps, flame_paths, flame


def _restore_parse(stored: Dict[str, np.ndarray], split_files: Dict[str, Path]):
    """A stored parse when it is still valid (its files' ``stat`` unchanged), else None."""
    try:
        if int(stored["format"]) != _PARSE_FORMAT:
            return None
        folders = unpack_strings(stored["folders"], int(stored["n_folders"]))
        timesteps = [int(t) for t in stored["timesteps"].tolist()]
        paths = unpack_strings(stored["flame_paths"], len(timesteps))
        if unpack_strings(stored["signature"], 1)[0] != _current_signature(split_files, folders, paths):
            return None
        splits = unpack_strings(stored["splits"], len(split_files))
        if splits != list(split_files):
            return None
        flame = {k[len("param_"):]: torch.from_numpy(v) for k, v in stored.items() if k.startswith("param_")}
        if set(flame) - {"dynamic_offset"} != set(FLAME_TIMESTEP_KEYS) or any(
                v.shape[0] != len(timesteps) for v in flame.values()):
            return None
        frames = {split: frames_from_arrays(stored, f"split{i}_") for i, split in enumerate(splits)}
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None
    return frames, timesteps, dict(zip(timesteps, map(Path, paths))), flame


def _build(
    root: Path,
    split_files: Dict[str, Path],
    resolution_scale: float,
    image_cache_bytes: int,
    union_all: bool,
    progress: bool = False,
    cache=None,
) -> Subject:
    """Parse ``split_files`` (name -> JSON), validate, load FLAME, build the Subject.

    ``union_all``: also expose ``frames["all"]`` = the concatenation of the splits (first
    occurrence of each image wins), for driving sequences without a ``transforms.json``.
    ``progress``: tqdm bars over the frame records and the FLAME files.
    ``cache``: a :class:`scene.data.subject_cache.SubjectCache` keeping the parse (:func:`_parsed`).
    """
    resolution_scale = _check_scale(resolution_scale)
    if image_cache_bytes is None or image_cache_bytes < 0:
        raise UserFacingError(f"image_cache_bytes must be >= 0, got {image_cache_bytes!r}")
    frames, timesteps, flame_paths, flame = _parsed(root, split_files, resolution_scale, progress, cache)
    if union_all:
        seen, all_frames = set(), []
        for fs in frames.values():
            for f in fs:
                if f.image_path not in seen:
                    seen.add(f.image_path)
                    all_frames.append(f)
        frames["all"] = all_frames

    canonical_path = root / CANONICAL_FILENAME
    canonical = _load_canonical(canonical_path) if canonical_path.is_file() else {}
    # Identity: canonical npz first (GA fits it jointly over the sequences), else timestep 0's.
    shape = static_offset = None
    if "shape" in canonical:
        shape = canonical["shape"].reshape(N_SHAPE)
    if "static_offset" in canonical:
        static_offset = canonical["static_offset"].reshape(-1, 3)
    if (shape is None or static_offset is None) and timesteps:
        path = flame_paths[timesteps[0]]
        missing = "shape and static_offset" if shape is None and static_offset is None else (
            "shape" if shape is None else "static_offset")
        # Not silent: GA fits the identity jointly over all sequences; one timestep's is a stand-in.
        print(f"[data] warning: {canonical_path} {'has no ' + missing if canonical else 'does not exist'}; "
              f"using timestep {timesteps[0]}'s from {path}", file=sys.stderr)
        with _open_npz(path) as f:
            if shape is None:
                arr = _get(f, path, "shape", required=False)
                if arr is None:
                    raise InputFileError(
                        f"no FLAME 'shape' found: {canonical_path} "
                        f"{'has no key shape' if canonical else 'does not exist'} and {path} has no key 'shape'"
                    )
                shape = torch.from_numpy(_vector(arr, path, "shape", N_SHAPE))
            if static_offset is None:
                arr = _get(f, path, "static_offset", required=False)
                if arr is not None:
                    static_offset = torch.from_numpy(_offsets(arr, path, "static_offset"))
    if shape is None:
        if not canonical_path.is_file():
            raise MissingFileError(
                f"{canonical_path}: file not found, and the subject has no frames to take the "
                f"FLAME shape from"
            )
        raise InputFileError(f"{canonical_path}: missing key 'shape' and the subject has no frames to take it from")

    return Subject(
        root=root,
        frames=frames,
        timesteps=timesteps,
        flame=flame,
        shape=shape,
        static_offset=static_offset,
        canonical=canonical,
        resolution_scale=resolution_scale,
        split_files=dict(split_files),
        image_cache=ImageCache(int(image_cache_bytes)),
    )


def load_subject(
    path: PathLike,
    resolution_scale: float = 1.0,
    splits: Sequence[str] = DEFAULT_SPLITS,
    image_cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: bool = False,
    cache=None,
) -> Subject:
    """Load a NeRSemble subject folder (single sequence or union).

    Args:
        path: folder holding ``transforms_<split>.json`` for every requested split (and usually
            ``canonical_flame_param.npz``).
        resolution_scale: image and intrinsics scale ``s``: ``new_w = round(w * s)``, K scaled by
            ``new_w / w`` and ``new_h / h``. 0.5 halves the resolution.
        splits: which ``transforms_<split>.json`` to read; each must exist (it may hold no frames).
        image_cache_bytes: budget of the decoded-image LRU cache (0 disables caching).
        progress: tqdm bars over the frame records and the FLAME files (tens of thousands at
            NeRSemble's size).
        cache: a :class:`scene.data.subject_cache.SubjectCache` that keeps the parsed frames and
            stacked FLAME parameters (``parsed_subjects/``), so that a later load of the same
            JSONs reads a few arrays instead of every record and FLAME file: used while no JSON,
            FLAME file or folder holding the frames' files has changed (``stat``: size,
            modification time, inode), else parsed again and stored. None: always parsed. The
            canonical npz is read every time either way (one small file).

    Raises:
        MissingFileError: folder / JSON / image / mask / FLAME file missing.
        InputFileError: malformed JSON, missing or invalid field, npz with a missing key or a
            wrong shape.
    """
    root = Path(path)
    if not root.is_dir():
        raise MissingFileError(
            f"{root}: subject folder not found (expected a folder with transforms_train.json, "
            f"transforms_val.json, transforms_test.json and {CANONICAL_FILENAME})"
        )
    if isinstance(splits, str):
        splits = (splits,)
    split_files = {s: root / f"transforms_{s}.json" for s in dict.fromkeys(splits)}
    return _build(root, split_files, resolution_scale, image_cache_bytes, union_all=False, progress=progress,
                  cache=cache)


def load_sequence(
    path: PathLike, resolution_scale: float = 1.0, image_cache_bytes: int = DEFAULT_CACHE_BYTES
) -> Subject:
    """Load a driving target (any subject or sequence folder, or one transforms JSON).

    ``frames["all"]`` holds every frame: the folder's ``transforms.json`` if it has one, else the
    union of whichever of ``transforms_{train,val,test}.json`` exist (each image once). The split
    files found are also exposed under their own names. ``path`` may also be a JSON file, whose
    frames become ``frames["all"]``.
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        return _build(p.parent, {"all": p}, resolution_scale, image_cache_bytes, union_all=False)
    if not p.is_dir():
        raise MissingFileError(f"{p}: sequence folder not found")
    found = {s: p / f"transforms_{s}.json" for s in DEFAULT_SPLITS if (p / f"transforms_{s}.json").is_file()}
    if (p / "transforms.json").is_file():
        return _build(p, {"all": p / "transforms.json", **found}, resolution_scale, image_cache_bytes, union_all=False)
    if not found:
        raise MissingFileError(
            f"{p}: no transforms.json and none of transforms_train.json, transforms_val.json, "
            f"transforms_test.json; not a NeRSemble sequence folder"
        )
    return _build(p, found, resolution_scale, image_cache_bytes, union_all=True)


def is_nersemble_folder(path: PathLike) -> bool:
    """Whether ``path`` looks like a NeRSemble export: a transforms JSON, or a folder holding
    ``transforms.json`` or any ``transforms_{train,val,test}.json``."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".json"
    return p.is_dir() and any((p / name).is_file() for name in
                              ["transforms.json"] + [f"transforms_{s}.json" for s in DEFAULT_SPLITS])
