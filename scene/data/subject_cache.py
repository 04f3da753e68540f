"""What a training start-up derives from a subject, kept across runs: the parsed subject, its
FLAME meshes, expression distances and classes, file-check manifests.

Every seed, ablation, launch subject and resume of a subject would otherwise redo the same
start-up work (at NeRSemble's size: a quadratic expression clustering, tens of thousands of PNG
headers). Results are stored as JSON, ``.npy`` or ``.npz`` files under ``cache_root()/subjects/<kind>/<key>.*``
(:func:`utils.cache_dir.cache_root`: ``$AVATAR_CACHE_DIR``, else ``<repo>/.cache``), where the key
is a digest of everything the result depends on (the content, never a folder name), so one
cache serves every output folder and every copy of a subject, and a changed input simply misses.

Why there and not inside the subject folder: datasets are often shared and read-only on clusters,
one repository checkout is what a user's jobs share, and ``AVATAR_CACHE_DIR`` already moves the
framework's other cache (LPIPS weights) to wherever jobs should share it.

A cache that cannot be written (read-only disk) is not an error: a warning, and the result is
recomputed next time.
"""
from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch

from utils.atomic import atomic_write
from utils.cache_dir import cache_root

__all__ = ["SubjectCache", "content_digest", "pack_strings", "unpack_strings"]


def content_digest(parts: Iterable[Any]) -> str:
    """sha256 over a sequence of tensors, arrays and JSON-serialisable values (each tagged with its
    dtype and shape, so that ``[1, 2]`` as int64 and as float32 differ)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            h.update(f"array {arr.dtype.str} {arr.shape}\0".encode())
            h.update(arr.tobytes())
        else:
            h.update(b"json\0" + json.dumps(part, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()


def pack_strings(values: Iterable[str]) -> np.ndarray:
    """Strings as one uint8 array of their UTF-8 joined by NUL (which no path holds): how the
    ``.npz`` entries store many paths compactly (no pickles). Back with :func:`unpack_strings`."""
    return np.frombuffer("\0".join(values).encode("utf-8"), dtype=np.uint8)


def unpack_strings(array: np.ndarray, n: int) -> list:
    """The ``n`` strings :func:`pack_strings` stored; ValueError when there are not ``n``."""
    values = array.tobytes().decode("utf-8").split("\0") if n else []
    if len(values) != n:
        raise ValueError(f"expected {n} strings, found {len(values)}")
    return values


class SubjectCache:
    """JSON documents under ``root/<kind>/<key>.json`` (``root``: ``cache_root()/subjects``).

    Args:
        root: the folder; None = ``cache_root() / "subjects"`` (read when the cache is created, so
            ``AVATAR_CACHE_DIR`` set before takes effect).
    """

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else cache_root() / "subjects"
        self._warned = False

    def path(self, kind: str, key: str) -> Path:
        """Where the document ``kind``/``key`` lives (whether it exists or not)."""
        return self.root / kind / f"{key}.json"

    def read(self, kind: str, key: str) -> Optional[dict]:
        """The stored document, or None when it is missing or unreadable (then recomputed)."""
        try:
            with open(self.path(kind, key)) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def write(self, kind: str, key: str, doc: dict) -> Optional[Path]:
        """Store ``doc`` atomically; on a file-system error warn once and return None."""
        return self._write(self.path(kind, key), "w", lambda f: json.dump(doc, f))

    def array_path(self, kind: str, key: str) -> Path:
        """Where the array ``kind``/``key`` lives (``.npy``)."""
        return self.root / kind / f"{key}.npy"

    def read_array(self, kind: str, key: str) -> Optional[np.ndarray]:
        """The stored array, or None when it is missing or unreadable."""
        try:
            return np.load(self.array_path(kind, key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def write_array(self, kind: str, key: str, array: np.ndarray) -> Optional[Path]:
        """Store ``array`` as ``.npy`` atomically; on a file-system error warn once, return None."""
        return self._write(self.array_path(kind, key), "wb", lambda f: np.save(f, np.asarray(array)))

    def arrays_path(self, kind: str, key: str) -> Path:
        """Where the named arrays ``kind``/``key`` live (``.npz``, uncompressed)."""
        return self.root / kind / f"{key}.npz"

    def read_arrays(self, kind: str, key: str) -> Optional[Dict[str, np.ndarray]]:
        """The stored named arrays (all read into memory), or None when the file is missing,
        truncated or otherwise unreadable (then recomputed)."""
        try:
            with np.load(self.arrays_path(kind, key), allow_pickle=False) as f:
                return {name: f[name] for name in f.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            return None

    def write_arrays(self, kind: str, key: str, arrays: Dict[str, Any]) -> Optional[Path]:
        """Store named arrays as one ``.npz`` atomically (a reader sees all or nothing); on a
        file-system error warn once and return None."""
        return self._write(self.arrays_path(kind, key), "wb",
                           lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))

    def _write(self, path: Path, mode: str, dump) -> Optional[Path]:
        try:
            with atomic_write(path, mode) as f:
                dump(f)
        except OSError as exc:
            if not self._warned:
                print(f"[data] warning: cannot write the start-up cache {path} ({exc.strerror or exc}); "
                      "it is recomputed at every start. Set AVATAR_CACHE_DIR to a writable folder",
                      file=sys.stderr)
                self._warned = True
            return None
        return path
