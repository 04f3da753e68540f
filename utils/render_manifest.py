"""``render.json``: what a render.py output folder holds, so that a stopped render resumes.

render.py writes it into every output folder it renders (``MODEL/<split>/ours_<it>/``,
``reenact_*``, ``orbit*``) before the first frame and again when the last one is written::

    {"format": 1,
     "model": {"iteration": int, "checkpoint_sha256": str, "config_sha256": str, "flame": str},
     "settings": {"backend": str, "device": str, "torch": str},
     "subfolders": ["gt", "masks", "renders"],    # the folders of frame PNGs it writes
     "frames": {image_name: spec},                # the frames asked for, in render order; spec: a
                                                  # digest of the frame's camera, motion and GT files
     "complete": bool}                            # every frame of "frames" is written

A rerun whose ``model`` and ``settings`` are those recorded keeps every frame already written
whose spec is unchanged (its files are written atomically and ``renders/<name>.png`` last, so a
present render means a complete frame) and renders the rest; otherwise the folder's PNGs are
removed first. evaluate.py refuses a folder whose render is not complete.
"""
from __future__ import annotations

import json
from pathlib import Path

from utils.atomic import write_text_atomic

__all__ = ["MANIFEST_NAME", "FORMAT", "read_manifest", "write_manifest", "unfinished_render"]

MANIFEST_NAME = "render.json"
FORMAT = 1


def read_manifest(folder: Path) -> dict | None:
    """The manifest of an output folder, or None when it has none (or one this code cannot read:
    then nothing in the folder is trusted and it is rendered afresh)."""
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("frames"), dict):
        return None
    return data


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``folder/render.json`` atomically (deterministic text: no times, so that a resumed
    render ends with the very file a straight one writes)."""
    write_text_atomic(Path(folder) / MANIFEST_NAME, json.dumps({"format": FORMAT, **manifest}, indent=1) + "\n")


def unfinished_render(folder: Path) -> str | None:
    """Why the frames in ``folder`` are not a finished render (None when they are, or when the
    folder has no manifest: frames from elsewhere are scored as they are)."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("complete"):
        return None
    renders = Path(folder) / "renders"
    done = sum((renders / f"{name}.png").is_file() for name in manifest["frames"])
    return (f"render.py stopped after {done} of {len(manifest['frames'])} frames in {folder} ({MANIFEST_NAME} "
            "says it is not complete): run the same render.py command again, it continues where it stopped")
