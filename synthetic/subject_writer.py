"""Writing NeRSemble/GaussianAvatars-format files: transforms JSON, FLAME npz, PNG images.

Everything written here is byte-for-byte deterministic: ``.npz`` archives are built with fixed
zip timestamps (``numpy.savez`` stamps the current time), JSON uses a fixed key order and
formatting, and PNGs carry no time chunk.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["write_npz", "write_json", "frame_entry", "transforms_document",
           "FLAME_NPZ_KEYS"]

FLAME_NPZ_KEYS = ("translation", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr", "static_offset")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str | os.PathLike, arrays: dict) -> None:
    """Write an uncompressed ``.npz`` (readable by ``numpy.load``) with fixed timestamps.

    Args:
        path: output file.
        arrays: name -> array (written in the given order).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, data.getvalue())
    Path(path).write_bytes(buf.getvalue())


def write_json(path: str | os.PathLike, doc: dict) -> None:
    """Write JSON with 2-space indentation (deterministic: insertion order, repr floats)."""
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def frame_entry(*, timestep_index: int, timestep_local: int, camera_index: int, camera_id: str, K: np.ndarray,
                width: int, height: int, c2w: np.ndarray, prefix: str) -> dict:
    """One ``frames`` entry of a transforms JSON.

    Args:
        timestep_index: index written to the JSON (cumulative over a union).
        timestep_local: the timestep within its sequence folder (file names).
        camera_index, camera_id: camera.
        K: (3, 3) intrinsics of the written images; width, height: image size.
        c2w: (4, 4) OpenGL camera-to-world.
        prefix: path from the JSON's folder to the sequence folder ("" or "../<sequence>/").
    """
    name = f"{timestep_local:05d}_{camera_index:02d}.png"
    return {
        "timestep_index": int(timestep_index),
        "timestep_index_original": int(timestep_local),
        "timestep_id": f"frame_{timestep_local:05d}",
        "camera_index": int(camera_index),
        "camera_id": str(camera_id),
        "cx": float(K[0, 2]), "cy": float(K[1, 2]), "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]),
        "h": int(height), "w": int(width),
        "camera_angle_x": 2.0 * math.atan(width / (2.0 * float(K[0, 0]))),
        "camera_angle_y": 2.0 * math.atan(height / (2.0 * float(K[1, 1]))),
        "transform_matrix": [[float(v) for v in row] for row in c2w],
        "file_path": f"{prefix}images/{name}",
        "fg_mask_path": f"{prefix}fg_masks/{name}",
        "flame_param_path": f"{prefix}flame_param/{timestep_local:05d}.npz",
    }


def transforms_document(frames: list, K_shared: np.ndarray, width: int, height: int) -> dict:
    """A transforms JSON: shared intrinsics (the mean camera), index lists and the frames."""
    fx, fy = float(K_shared[0, 0]), float(K_shared[1, 1])
    return {
        "cx": float(K_shared[0, 2]), "cy": float(K_shared[1, 2]), "fl_x": fx, "fl_y": fy,
        "h": int(height), "w": int(width),
        "camera_angle_x": 2.0 * math.atan(width / (2.0 * fx)),
        "camera_angle_y": 2.0 * math.atan(height / (2.0 * fy)),
        "timestep_indices": sorted({f["timestep_index"] for f in frames}),
        "camera_indices": sorted({f["camera_index"] for f in frames}),
        "frames": frames,
    }
