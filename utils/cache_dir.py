"""The framework's cache folder: ``$AVATAR_CACHE_DIR`` if set, else ``<repo>/.cache``.

Everything the framework caches lives under it: the LPIPS weights (``lpips/``) and what a
training start-up derives from a subject (``subjects/``: expression classes, file-check
manifests; :mod:`scene.data.subject_cache`). One variable moves it all (e.g. to a scratch disk
on a cluster, or to a folder every job of a user shares).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    """``$AVATAR_CACHE_DIR`` (``~`` expanded) if the variable is set and not empty, else
    ``<repo>/.cache`` (ignored by git)."""
    root = os.environ.get("AVATAR_CACHE_DIR")
    return Path(root).expanduser() if root else REPO_ROOT / ".cache"
