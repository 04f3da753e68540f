"""Atomic checkpoint folders and the random state needed to resume a run exactly.

A checkpoint is a folder ``MODEL/checkpoints/iteration_NNNNNNN/``. It is written under a
temporary name and renamed into place, so a folder with the final name is always complete: an
interrupted save leaves only a ``.tmp`` folder that the next save removes.
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


def write_checkpoint(model_dir: str | os.PathLike, iteration: int, writer: Callable[[Path], None], keep: int = 3) -> Path:
    """Create checkpoint ``iteration`` atomically with ``writer(folder)``; keep the newest ``keep``."""
    final = checkpoint_path(model_dir, iteration)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob("*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / (final.name + ".tmp")
    tmp.mkdir()
    writer(tmp)
    for f in tmp.iterdir():  # make the data durable before the rename publishes it
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
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
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
