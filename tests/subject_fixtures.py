"""Writer of small fake NeRSemble-format subjects for the reader's tests.

Layout written under ``parent`` (mirrors the GaussianAvatars export, docs/DESIGN.md section 1)::

    parent/
      SEQ_EXP-0/  images/00000_00.png  fg_masks/00000_00.png  flame_param/00000.npz
                  transforms_{train,val,test}.json  canonical_flame_param.npz
      SEQ_EXP-1/  ...
      SEQ_TEST/   ...                        (held-out sequence, all cameras in the union's test)
      UNION/      transforms_{train,val,test}.json  canonical_flame_param.npz
                  (frame paths ../SEQ_.../images/..., cumulative timestep_index)

Images are random noise (seeded), so resizing can be checked against PIL directly. Cameras sit on
a ring of radius ``distance`` around the origin, looking at it, in OpenGL convention.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from PIL import Image

FLAME_SHAPES = {
    "translation": (1, 3),
    "rotation": (1, 3),
    "neck_pose": (1, 3),
    "jaw_pose": (1, 3),
    "eyes_pose": (1, 6),
    "shape": (300,),
    "expr": (1, 100),
}


def look_at_opengl(position, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenGL camera-to-world ``(4, 4)``: camera at ``position`` looking at ``target``
    (camera x right, y up, z backward = from target towards the camera)."""
    position = np.asarray(position, dtype=np.float64)
    z = position - np.asarray(target, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, dtype=np.float64), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, position
    return m


def write_flame_npz(path: Path, rng: np.random.Generator, n_vertices: int = 5143, dynamic: bool = False, **override):
    """One FLAME parameter file with the export's keys and shapes (small random values)."""
    data = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in FLAME_SHAPES.items()}
    data["static_offset"] = (rng.standard_normal((1, n_vertices, 3)) * 1e-3).astype(np.float32)
    if dynamic:
        data["dynamic_offset"] = (rng.standard_normal((1, n_vertices, 3)) * 1e-3).astype(np.float32)
    for k, v in override.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def edit_json(path: Path, fn: Callable[[dict], object]) -> None:
    """Load ``path``, let ``fn`` modify the dict in place (its return value is ignored), write it back."""
    data = read_json(path)
    fn(data)
    write_json(path, data)


@dataclass
class FakeSubject:
    parent: Path
    union: Path
    sequences: Dict[str, Path]  # name -> folder
    train_sequences: List[str]
    test_sequence: Optional[str]
    n_cameras: int
    n_timesteps: int  # per sequence
    val_camera: int
    width: int
    height: int
    c2w: Dict[int, np.ndarray]  # camera index -> OpenGL c2w
    intrinsics: Dict[int, dict]  # camera index -> {fl_x, fl_y, cx, cy, w, h} as written
    shared: dict  # top-level intrinsics
    flame: Dict[int, dict] = field(default_factory=dict)  # union timestep -> npz content
    canonical: dict = field(default_factory=dict)

    @property
    def counts(self) -> Dict[str, int]:
        n_train_seq = len(self.train_sequences)
        return {
            "train": n_train_seq * self.n_timesteps * (self.n_cameras - 1),
            "val": n_train_seq * self.n_timesteps,
            "test": (self.n_timesteps * self.n_cameras) if self.test_sequence else 0,
        }


def write_fake_subject(
    parent: Path,
    *,
    n_cameras: int = 4,
    n_train_sequences: int = 2,
    n_timesteps: int = 2,
    test_sequence: bool = True,
    val_camera: int = 1,
    width: int = 24,
    height: int = 32,
    masks: bool = True,
    mask_field: bool = True,
    rgba: bool = False,
    per_frame_intrinsics: bool = False,
    odd_size_camera: Optional[int] = None,
    with_extension: bool = True,
    dynamic_offset: bool = False,
    n_vertices: int = 5143,
    distance: float = 1.0,
    camera_ids: bool = True,
    seed: int = 0,
) -> FakeSubject:
    """Write sequences + a union folder under ``parent`` and return what was written.

    Args:
        per_frame_intrinsics: give every camera its own fl_x, fl_y, cx, cy in the frame records
            (different from the shared top-level values).
        odd_size_camera: that camera's images are 2 px wider and 4 px taller, declared through
            per-frame ``w``/``h`` (with its own cx, cy).
        masks: write ``fg_masks/``; ``mask_field``: reference them via ``fg_mask_path`` (else the
            reader must find them by the ``fg_masks/`` convention).
        rgba: write RGBA images (alpha = the mask) instead of RGB composited over white.
        with_extension: ``file_path`` with ``.png`` (else without, as some exports do).
    """
    parent = Path(parent)
    rng = np.random.default_rng(seed)
    base_fl = 2048.0 * width / 550.0
    shared = dict(fl_x=base_fl, fl_y=base_fl, cx=width / 2.0, cy=height / 2.0, w=width, h=height)
    shared["camera_angle_x"] = float(2 * np.arctan(width / (2 * base_fl)))
    shared["camera_angle_y"] = float(2 * np.arctan(height / (2 * base_fl)))

    c2w, intr = {}, {}
    for c in range(n_cameras):
        ang = np.deg2rad(-60 + 120 * c / max(1, n_cameras - 1))
        pos = distance * np.array([np.sin(ang), 0.1 * ((c % 3) - 1), np.cos(ang)])
        c2w[c] = look_at_opengl(pos)
        rec = {}
        if per_frame_intrinsics:
            rec.update(fl_x=base_fl * (1.0 + 0.05 * c), fl_y=base_fl * (1.02 + 0.05 * c), cx=width / 2.0 + 0.5 * c, cy=height / 2.0 - 0.25 * c)
        if odd_size_camera is not None and c == odd_size_camera:
            rec.update(w=width + 2, h=height + 4, cx=(width + 2) / 2.0 + 0.3, cy=(height + 4) / 2.0 - 0.7)
        intr[c] = rec

    names = [f"SEQ_EXP-{k}" for k in range(n_train_sequences)] + (["SEQ_TEST"] if test_sequence else [])
    seqs = {n: parent / n for n in names}
    info = FakeSubject(
        parent=parent,
        union=parent / "UNION",
        sequences=seqs,
        train_sequences=names[:n_train_sequences],
        test_sequence="SEQ_TEST" if test_sequence else None,
        n_cameras=n_cameras,
        n_timesteps=n_timesteps,
        val_camera=val_camera,
        width=width,
        height=height,
        c2w=c2w,
        intrinsics=intr,
        shared=shared,
    )

    def frame_record(seq_prefix: str, t_local: int, t_global: int, c: int) -> dict:
        name = f"{t_local:05d}_{c:02d}"
        rec = {
            "timestep_index": t_global,
            "timestep_index_original": t_local,
            "camera_index": c,
            "transform_matrix": c2w[c].tolist(),
            "file_path": f"{seq_prefix}images/{name}" + (".png" if with_extension else ""),
            "flame_param_path": f"{seq_prefix}flame_param/{t_local:05d}.npz",
        }
        if camera_ids:
            rec["camera_id"] = f"2221{c:04d}"
        if masks and mask_field:
            rec["fg_mask_path"] = f"{seq_prefix}fg_masks/{name}.png"
        rec.update(intr[c])
        return rec

    def top(frames: list) -> dict:
        d = dict(shared)
        d["timestep_indices"] = sorted({f["timestep_index"] for f in frames})
        d["camera_indices"] = sorted({f["camera_index"] for f in frames})
        d["frames"] = frames
        return d

    canonical = write_flame_npz(parent / "_canonical_tmp.npz", rng, n_vertices=n_vertices)
    (parent / "_canonical_tmp.npz").unlink()
    info.canonical = canonical
    union = {"train": [], "val": [], "test": []}
    t_global = 0
    for name in names:
        d = seqs[name]
        (d / "images").mkdir(parents=True, exist_ok=True)
        if masks:
            (d / "fg_masks").mkdir(parents=True, exist_ok=True)
        local = {"train": [], "val": [], "test": []}
        for t in range(n_timesteps):
            info.flame[t_global] = write_flame_npz(d / "flame_param" / f"{t:05d}.npz", rng, n_vertices=n_vertices, dynamic=dynamic_offset)
            for c in range(n_cameras):
                w = intr[c].get("w", width)
                h = intr[c].get("h", height)
                rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                # A soft elliptical matte, so resized masks have fractional values.
                yy, xx = np.mgrid[0:h, 0:w]
                r = ((xx - w / 2) / (0.35 * w)) ** 2 + ((yy - h / 2) / (0.4 * h)) ** 2
                alpha = np.clip((1.2 - r) * 255, 0, 255).astype(np.uint8)
                stem = f"{t:05d}_{c:02d}"
                if rgba:
                    Image.fromarray(np.dstack([rgb, alpha])).save(d / "images" / f"{stem}.png")
                else:
                    Image.fromarray(rgb).save(d / "images" / f"{stem}.png")
                if masks:
                    Image.fromarray(alpha).save(d / "fg_masks" / f"{stem}.png")
                is_test = name == info.test_sequence
                split = "test" if is_test else ("val" if c == val_camera else "train")
                union[split].append(frame_record(f"../{name}/", t, t_global, c))
                local["val" if c == val_camera else "train"].append(frame_record("", t, t, c))
            t_global += 1
        for s in ("train", "val", "test"):
            write_json(d / f"transforms_{s}.json", top(local[s]))
        np.savez(d / "canonical_flame_param.npz", **canonical)

    info.union.mkdir(parents=True, exist_ok=True)
    for s in ("train", "val", "test"):
        write_json(info.union / f"transforms_{s}.json", top(union[s]))
    np.savez(info.union / "canonical_flame_param.npz", **canonical)
    return info
