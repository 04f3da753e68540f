"""Image-file checks before training, skipped when nothing changed since the last one.

Reading the header of every image a run will read names a missing, corrupt or wrong-size file
at start-up rather than hours into training. At NeRSemble's size that is tens of thousands of
files opened at every start, resume and requeue; so a passed check leaves a *manifest*: a
digest of each file's ``stat`` (size, modification time in ns, inode). The next check of the
same files with the same expected sizes only ``stat`` s them; a file that was rewritten, replaced,
removed or resized changes the digest and the headers are read again.

    checked = check_image_files([(path, (w, h)), ...], cache=SubjectCache(), progress=True)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

from tqdm import tqdm

from scene.data.subject_cache import SubjectCache
from utils.image_io import check_image_header

__all__ = ["check_image_files", "files_signature", "MANIFEST_KIND"]

MANIFEST_KIND = "file_checks"
_FORMAT = 1

Item = Tuple[Path, Optional[Tuple[int, int]]]


def _items_key(items: Sequence[Item]) -> str:
    """Which files are checked against which sizes (the manifest's name)."""
    h = hashlib.sha256(f"file-checks {_FORMAT}\0".encode())
    for path, size in items:
        h.update(f"{os.path.abspath(path)}\0{size}\0".encode())
    return h.hexdigest()


def files_signature(paths: Sequence[Path]) -> Optional[str]:
    """sha256 over each file's (size, mtime_ns, inode); None if any file cannot be ``stat`` ed
    (the header check then names it)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return None
        h.update(f"{st.st_size} {st.st_mtime_ns} {st.st_ino}\0".encode())
    return h.hexdigest()


def check_image_files(items: Sequence[Item], cache: Optional[SubjectCache] = None, progress: bool = False,
                      what: str = "images") -> bool:
    """Read the header of every ``(path, expected (w, h) or None)`` unless ``cache`` holds a
    manifest of the same files, unchanged since they passed.

    Raises what :func:`utils.image_io.check_image_header` raises (one error naming the file).
    Returns True when the headers were read, False when the manifest said nothing changed.
    """
    items = list(items)
    key = _items_key(items) if cache is not None else None
    signature = files_signature([p for p, _ in items]) if cache is not None else None
    if cache is not None and signature is not None:
        doc = cache.read(MANIFEST_KIND, key)
        if doc is not None and doc.get("signature") == signature and doc.get("n_files") == len(items):
            return False
    for path, size in tqdm(items, desc=f"checking {what}", unit="file", disable=not progress, leave=False):
        check_image_header(path, size)
    if cache is not None and signature is not None:
        cache.write(MANIFEST_KIND, key, {"format": _FORMAT, "n_files": len(items), "signature": signature})
    return True
