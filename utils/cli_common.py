"""Small pieces the command-line tools (train.py, render.py) share."""
from __future__ import annotations

import numpy as np
import torch

from utils.errors import InputFileError


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputFileError(f"device {name!r} asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)


def even_subset(items: list, limit: int) -> list:
    """At most ``limit`` items, evenly spaced and in order (``limit <= 0``: all of them)."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]
