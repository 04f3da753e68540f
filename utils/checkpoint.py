"""Atomic checkpoint folders and the random state needed to resume a run exactly.

A checkpoint is a folder ``MODEL/checkpoints/iteration_NNNNNNN/``. It is written under a
temporary name and renamed into place, so a folder with the final name is always complete: an
interrupted save leaves only a ``.tmp`` folder that the next save removes, and a failed write
(disk full, read-only folder) removes its own ``.tmp`` before reporting one clear error.

Everything saved is plain data (tensors, numbers, strings, lists, dicts), so checkpoints load with
``torch.load(..., weights_only=True)``: loading never runs code from the file.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from utils.errors import InputFileError, MissingFileError, UserFacingError

CHECKPOINT_DIR = "checkpoints"
_PATTERN = re.compile(r"^iteration_(\d+)$")


def checkpoint_path(model_dir: str | os.PathLike, iteration: int) -> Path:
    return Path(model_dir) / CHECKPOINT_DIR / f"iteration_{iteration:07d}"


def list_checkpoints(model_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a model folder, oldest first: [(iteration, folder)]."""
    root = Path(model_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _PATTERN.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(model_dir: str | os.PathLike) -> tuple[int, Path] | None:
    found = list_checkpoints(model_dir)
    return found[-1] if found else None


class CheckpointWriteError(UserFacingError, OSError):
    """A checkpoint could not be written (disk full, read-only folder, permissions)."""


def write_checkpoint(model_dir: str | os.PathLike, iteration: int, writer: Callable[[Path], None], keep: int = 3) -> Path:
    """Create checkpoint ``iteration`` atomically with ``writer(folder)``; keep the newest ``keep``.

    Raises CheckpointWriteError (one line: the folder, the OS's reason, the fix) when the folder
    cannot be written; no partial file is left behind.
    """
    final = checkpoint_path(model_dir, iteration)
    tmp = final.parent / (final.name + ".tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob("*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        writer(tmp)
        for f in tmp.iterdir():  # make the data durable before the rename publishes it
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(
            f"cannot write checkpoint {final}: {exc.strerror or exc}; free disk space or make "
            f"{final.parent} writable (or choose another -m folder), then continue with --resume") from None
    except RuntimeError as exc:  # torch.save reports a full disk as RuntimeError ("... file write failed")
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"cannot write checkpoint {final}: {str(exc).splitlines()[0]}; free disk space "
                                   "or choose another -m folder, then continue with --resume") from None
    if final.exists():
        old = final.parent / (final.name + ".old.tmp")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    if keep > 0:
        for _, path in list_checkpoints(model_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
    return final


def capture_rng_state() -> dict:
    """Python, numpy, torch (and CUDA) random states as plain data (tensors, ints, lists)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_state(path: str | os.PathLike, map_location="cpu"):
    """``torch.load`` of a checkpoint file without running code (``weights_only=True``).

    Raises InputFileError naming the file when it is missing, truncated, corrupt or holds anything
    but plain data (a pickle that would run code is refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: missing (the checkpoint is incomplete; use another --iteration)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path}: not a readable checkpoint file ({first[:200]})") from None
