"""FLAME head model layer (docs/DESIGN.md section 2): restricted pickle loading, LBS and GaussianAvatars teeth.

    from flame_model import FLAME
    flame = FLAME(model_path, masks_path=None, n_shape=300, n_expr=100, add_teeth=True)
    verts = flame(shape, expr, rotation, neck_pose, jaw_pose, eyes_pose, translation, static_offset=None)

The FLAME files are not shipped; see ``flame_model/assets/flame/README.md``.
"""
from .flame import (FLAME, FLAME_SHAPE_COMPONENTS, JOINT_NAMES, MOTION_KEYS, POSE_KEYS, FlameData, frame_motion,
                    read_flame_masks, read_flame_model)
from .lbs import axis_angle_to_matrix, lbs
from .paths import (DEFAULT_FLAME_MASKS_PATH, DEFAULT_FLAME_MODEL_PATH, FLAME_ASSET_DIR, FLAME_DOWNLOAD_URL,
                    FlameFileError, FlameMasksMissingError, FlameModelMissingError, UnsafePickleError)
from .pickle_io import load_pickle

__all__ = ["FLAME", "FLAME_SHAPE_COMPONENTS", "JOINT_NAMES", "MOTION_KEYS", "POSE_KEYS", "FlameData", "frame_motion", "read_flame_model", "read_flame_masks",
           "axis_angle_to_matrix", "lbs", "load_pickle", "DEFAULT_FLAME_MODEL_PATH", "DEFAULT_FLAME_MASKS_PATH",
           "FLAME_ASSET_DIR", "FLAME_DOWNLOAD_URL", "FlameFileError", "FlameMasksMissingError",
           "FlameModelMissingError", "UnsafePickleError"]
