"""Small pieces the command-line tools (train.py, render.py, bench/) share."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import torch

from utils.errors import InputFileError

TORCH_FOR_DRIVER_FIX = ("install the torch build for your driver first (see the README, 'On a GPU'); the set-up then "
                        "reuses it. Or pass --device cpu to train on the CPU on purpose")


def visible_nvidia_gpus(timeout_s: float = 10.0) -> list[str]:
    """GPU names that ``nvidia-smi -L`` lists ([] without nvidia-smi, or when it fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout_s, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in out.splitlines()
            if line.startswith("GPU ") and ":" in line]


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is a clear error.

    ``auto`` never trains on the CPU quietly while a GPU is in the machine: when ``nvidia-smi``
    sees a GPU that the installed torch cannot use (e.g. a CUDA 13 wheel on a driver older than
    R580, or a CPU-only wheel), that is an error naming the fix.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        gpus = visible_nvidia_gpus()
        if gpus:
            raise InputFileError(
                f"nvidia-smi sees {gpus[0]} but this torch ({torch.__version__}, CUDA {torch.version.cuda}) cannot use "
                f"it; {TORCH_FOR_DRIVER_FIX}")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputFileError(f"device {name!r} asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200, torch 2.11.0+cu130, CUDA 13.0)`` or ``cpu (2 threads, torch ...)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return (f"cuda:{index} ({torch.cuda.get_device_name(index)}, torch {torch.__version__}, "
                f"CUDA {torch.version.cuda})")
    return f"{device.type} ({torch.get_num_threads()} threads, torch {torch.__version__})"


def even_subset(items: list, limit: int) -> list:
    """At most ``limit`` items, evenly spaced and in order (``limit <= 0``: all of them)."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]
