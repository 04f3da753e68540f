"""The subject contract every dataset format produces (docs/DESIGN.md section 1): cameras, frames,
per-timestep FLAME parameters and lazily decoded images.

A :class:`Subject` is what the CLIs, the trainer and the renderers use; they never read a dataset's
files themselves. Formats live behind :mod:`scene.data.datasets` (today NeRSemble's, :mod:`scene.data.nersemble`).

Camera conventions are those of :mod:`scene.data.cameras` (OpenCV world-to-camera ``viewmat``, pixel
``K`` with pixel centres at +0.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from scene.data.cameras import cameras_extent as _cameras_extent
from scene.data.cameras import focal_to_fov
from scene.data.subject_cache import pack_strings, unpack_strings
from utils.image_io import ImageCache, load_mask_uint8, load_rgb_uint8, uint8_to_float

__all__ = ["CameraFrame", "Subject", "FLAME_TIMESTEP_KEYS", "frames_to_arrays", "frames_from_arrays"]

#: Per-timestep FLAME parameters stacked over timesteps: key -> number of values per timestep.
#: Stored as ``(1, n)`` (the export's layout) or ``(n,)``.
FLAME_TIMESTEP_KEYS = {
    "translation": 3,
    "rotation": 3,
    "neck_pose": 3,
    "jaw_pose": 3,
    "eyes_pose": 6,
    "expr": 100,
}


# ============================================================================================
# Data classes
# ============================================================================================
@dataclass(eq=False)
class CameraFrame:
    """One image of a subject: camera, file paths and timestep.

    ``eq=False``: frames compare (and hash) by identity, so they can key dicts; comparing tensor
    fields element-wise would be meaningless anyway.

    Attributes:
        split: the split the frame was read from ("train", "val", "test", or "all" for a
            sequence's ``transforms.json``).
        image_path: the RGB PNG.
        mask_path: the foreground matte PNG, or None when the export has none.
        timestep: ``timestep_index`` (cumulative over a union subject).
        camera_index: ``camera_index`` (0..15 in NeRSemble).
        camera_id: ``camera_id`` as a string (the camera's serial), or None when absent.
        width, height: image size in pixels **after** ``resolution_scale``.
        K: ``(3, 3)`` float32 pixel intrinsics at the scaled size.
        viewmat: ``(4, 4)`` float32 OpenCV world-to-camera.
        camera_center: ``(3,)`` float32 camera centre in world space.
        flame_param_path: the timestep's FLAME npz.
        image_name: ``f"{timestep:05d}_{camera_index:02d}"`` (the name of rendered outputs).
        orig_width, orig_height: size declared in the JSON (= the PNG's size), before scaling.
        json_path, frame_index: where the record came from (``frames[frame_index]``).
    """

    split: str
    image_path: Path
    mask_path: Optional[Path]
    timestep: int
    camera_index: int
    camera_id: Optional[str]
    width: int
    height: int
    K: torch.Tensor = field(repr=False)
    viewmat: torch.Tensor = field(repr=False)
    camera_center: torch.Tensor = field(repr=False)
    flame_param_path: Path = field(repr=False)
    image_name: str = ""
    orig_width: int = 0
    orig_height: int = 0
    json_path: Optional[Path] = field(default=None, repr=False)
    frame_index: int = -1

    @property
    def fovx(self) -> float:
        """Horizontal field of view (radians) implied by K and the width."""
        return focal_to_fov(float(self.K[0, 0]), self.width)

    @property
    def fovy(self) -> float:
        """Vertical field of view (radians) implied by K and the height."""
        return focal_to_fov(float(self.K[1, 1]), self.height)

    @property
    def c2w(self) -> torch.Tensor:
        """``(4, 4)`` OpenCV camera-to-world (inverse of ``viewmat``)."""
        return torch.linalg.inv(self.viewmat.double()).float()


# Columns of frames_to_arrays: strings (None as "" with a presence flag where a field is optional),
# integers, float32 matrices.
_STRING_FIELDS = ("split", "image_path", "mask_path", "camera_id", "flame_param_path", "image_name", "json_path")
_PATH_FIELDS = ("image_path", "mask_path", "flame_param_path", "json_path")
_OPTIONAL_FIELDS = ("mask_path", "camera_id", "json_path")
_INT_FIELDS = ("timestep", "camera_index", "width", "height", "orig_width", "orig_height", "frame_index")
_TENSOR_FIELDS = ("K", "viewmat", "camera_center")


def frames_to_arrays(frames: Sequence[CameraFrame], prefix: str) -> Dict[str, np.ndarray]:
    """A list of frames as a few flat arrays named ``prefix + field`` (for ``np.savez``):
    what :func:`frames_from_arrays` turns back into equal frames, without re-reading any file."""
    out: Dict[str, np.ndarray] = {prefix + "n": np.array(len(frames), dtype=np.int64)}
    for name in _STRING_FIELDS:
        values = [getattr(f, name) for f in frames]
        if name in _OPTIONAL_FIELDS:
            out[prefix + name + "_present"] = np.array([v is not None for v in values], dtype=bool)
        out[prefix + name] = pack_strings(["" if v is None else str(v) for v in values])
    for name in _INT_FIELDS:
        out[prefix + name] = np.array([getattr(f, name) for f in frames], dtype=np.int64)
    for name in _TENSOR_FIELDS:
        shape = (0, 3, 3) if name == "K" else (0, 4, 4) if name == "viewmat" else (0, 3)
        out[prefix + name] = (torch.stack([getattr(f, name) for f in frames]).numpy() if frames
                              else np.zeros(shape, dtype=np.float32))
    return out


def frames_from_arrays(arrays, prefix: str) -> List[CameraFrame]:
    """The frames :func:`frames_to_arrays` stored under ``prefix`` (equal field by field; each
    frame owns its tensors, as a freshly parsed one does). Raises KeyError / ValueError on
    arrays that are not such a record."""
    n = int(arrays[prefix + "n"])
    columns = {}
    for name in _STRING_FIELDS:
        values = unpack_strings(arrays[prefix + name], n)
        if name in _PATH_FIELDS:
            # One Path per distinct string (a split's JSON, a timestep's FLAME file): building
            # Paths is most of the cost.
            made: Dict[str, Optional[Path]] = {"": None}
            values = [made[v] if v in made else made.setdefault(v, Path(v)) for v in values]
        if name in _OPTIONAL_FIELDS:
            present = arrays[prefix + name + "_present"]
            values = [v if p else None for v, p in zip(values, present.tolist())]
        columns[name] = values
    for name in _INT_FIELDS:
        values = arrays[prefix + name].tolist()
        if len(values) != n:
            raise ValueError(f"column {name} has {len(values)} entries, expected {n}")
        columns[name] = values
    for name in _TENSOR_FIELDS:
        t = torch.from_numpy(np.ascontiguousarray(arrays[prefix + name], dtype=np.float32))
        if t.shape[0] != n:
            raise ValueError(f"column {name} has {t.shape[0]} entries, expected {n}")
        columns[name] = t
    return [CameraFrame(**{name: columns[name][i] for name in _STRING_FIELDS + _INT_FIELDS},
                        **{name: columns[name][i].clone() for name in _TENSOR_FIELDS}) for i in range(n)]


class Subject:
    """A loaded subject (or driving sequence), whatever its dataset format. Built by a format's
    loaders (:mod:`scene.data.datasets`; NeRSemble's in :mod:`scene.data.nersemble`).

    Attributes:
        root: the subject folder.
        frames: split name -> list of :class:`CameraFrame` (possibly empty).
        timesteps: sorted ``timestep_index`` values referenced by any loaded split.
        timestep_row: timestep -> row in the stacked FLAME tensors.
        flame: per-timestep FLAME parameters stacked over rows: ``translation (T, 3)``,
            ``rotation (T, 3)``, ``neck_pose (T, 3)``, ``jaw_pose (T, 3)``, ``eyes_pose (T, 6)``,
            ``expr (T, 100)``, and ``dynamic_offset (T, V, 3)`` when the export has it.
        shape: ``(300,)`` identity shape (canonical npz, else the first timestep's file).
        static_offset: ``(V, 3)`` per-vertex offset (canonical npz, else the first timestep's
            file), exactly as stored (5023 or 5143 rows; the FLAME layer pads for the teeth), or
            None when neither file has one.
        canonical: the canonical npz as tensors (float32 for floating arrays), ``{}`` if absent.
        cameras_extent: GaussianAvatars' scene radius: max distance of the train cameras' centres
            from their mean x 1.1 (all loaded frames when there are no train frames).
        camera_indices: sorted camera indices over all loaded frames.
        resolution_scale: the image/intrinsics scale applied to every frame.
        split_files: split name -> the JSON it was read from.
        image_cache: the :class:`utils.image_io.ImageCache` behind ``load_image`` / ``load_mask``.
    """

    def __init__(
        self,
        root: Path,
        frames: Dict[str, List[CameraFrame]],
        timesteps: List[int],
        flame: Dict[str, torch.Tensor],
        shape: torch.Tensor,
        static_offset: Optional[torch.Tensor],
        canonical: Dict[str, torch.Tensor],
        resolution_scale: float,
        split_files: Dict[str, Path],
        image_cache: ImageCache,
        extent_split: str = "train",
    ):
        self.root = Path(root)
        self.frames = frames
        self.timesteps = list(timesteps)
        self.timestep_row = {t: i for i, t in enumerate(self.timesteps)}
        self.flame = flame
        self.shape = shape
        self.static_offset = static_offset
        self.canonical = canonical
        self.resolution_scale = float(resolution_scale)
        self.split_files = split_files
        self.image_cache = image_cache
        all_frames = self.all_frames()
        self.camera_indices = sorted({f.camera_index for f in all_frames})
        extent_frames = frames.get(extent_split) or all_frames
        centers = (
            torch.stack([f.camera_center for f in extent_frames]) if extent_frames else torch.zeros(0, 3)
        )
        self.cameras_extent = float(_cameras_extent(centers, margin=1.1))

    # ----------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in self.frames.items())
        return (
            f"Subject(root={str(self.root)!r}, frames: {counts}, timesteps={len(self.timesteps)}, "
            f"cameras={len(self.camera_indices)}, resolution_scale={self.resolution_scale})"
        )

    @property
    def splits(self) -> Tuple[str, ...]:
        return tuple(self.frames.keys())

    def all_frames(self) -> List[CameraFrame]:
        """Every distinct frame over all loaded splits (split order, then file order)."""
        seen, out = set(), []
        for fs in self.frames.values():
            for f in fs:
                if id(f) not in seen:
                    seen.add(id(f))
                    out.append(f)
        return out

    def _split(self, split: str) -> List[CameraFrame]:
        try:
            return self.frames[split]
        except KeyError:
            raise KeyError(f"split {split!r} was not loaded from {self.root}; loaded splits: {list(self.frames)}") from None

    def num_frames(self, split: str) -> int:
        """Number of frames in ``split`` (KeyError naming the loaded splits if unknown)."""
        return len(self._split(split))

    def flame_at(self, timestep: int) -> Dict[str, torch.Tensor]:
        """FLAME parameters of one timestep with a batch dim of 1, ready for ``FLAME(...)``:
        the per-timestep keys ``(1, n)`` (and ``dynamic_offset (1, V, 3)``), plus ``shape (1, 300)``
        and ``static_offset (1, V, 3)`` (when the subject has one)."""
        if timestep not in self.timestep_row:
            raise KeyError(f"timestep {timestep} is not referenced by the loaded splits of {self.root}")
        row = self.timestep_row[timestep]
        out = {k: v[row : row + 1] for k, v in self.flame.items()}
        out["shape"] = self.shape[None]
        if self.static_offset is not None:
            out["static_offset"] = self.static_offset[None]
        return out

    # ----------------------------------------------------------------------------------------
    def load_image(self, frame: CameraFrame) -> torch.Tensor:
        """The frame's image as ``(height, width, 3)`` float32 in [0, 1] at the scaled size.

        RGBA files are composited over white. Decoded lazily and kept in the LRU cache; each call
        returns a new tensor (safe to modify). Raises InputFileError if the PNG's size differs
        from the JSON's ``w``/``h`` or the file is unreadable.
        """
        return uint8_to_float(self.load_image_uint8(frame))

    def load_image_uint8(self, frame: CameraFrame) -> torch.Tensor:
        """:meth:`load_image` as ``(height, width, 3)`` uint8: the cached tensor itself (do not
        modify it). What the training loader copies to the device, 4x smaller than float32."""
        size = (frame.width, frame.height)
        orig = (frame.orig_width, frame.orig_height) if frame.orig_width else None
        key = ("rgb", str(frame.image_path), size)
        return self.image_cache.get_uint8(key, lambda: load_rgb_uint8(frame.image_path, size=size, expected_size=orig))

    def check_files(self, frames: Sequence[CameraFrame], progress: bool = False, masks: bool = True,
                    cache=None) -> bool:
        """Read the header of every frame's image (and mask, with ``masks``) once (size, format),
        so that a missing, corrupt or wrong-size file is named now rather than when a training
        step reaches it.

        Args:
            frames: the frames whose files will be read.
            progress: a tqdm bar over the files.
            masks: check the masks too (False where they are never read, as in training).
            cache: a :class:`scene.data.subject_cache.SubjectCache`: skip the headers when the
                same files passed before and none changed since (:mod:`scene.data.file_checks`).
        Returns:
            True when headers were read, False when the cache said nothing changed.
        """
        from scene.data.file_checks import check_image_files
        items = []
        for frame in frames:
            orig = (frame.orig_width, frame.orig_height) if frame.orig_width else None
            items.append((frame.image_path, orig))
            if masks and frame.mask_path is not None:
                items.append((frame.mask_path, orig))
        return check_image_files(items, cache=cache, progress=progress, what="images and masks" if masks else "images")

    def load_mask(self, frame: CameraFrame) -> Optional[torch.Tensor]:
        """The frame's foreground matte as ``(height, width, 1)`` float32 in [0, 1], or None."""
        if frame.mask_path is None:
            return None
        size = (frame.width, frame.height)
        orig = (frame.orig_width, frame.orig_height) if frame.orig_width else None
        key = ("mask", str(frame.mask_path), size)
        return self.image_cache.get(key, lambda: load_mask_uint8(frame.mask_path, size=size, expected_size=orig))
