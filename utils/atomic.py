"""Atomic file writes: readers (and a run killed mid-write) see the old file or the new one,
never half of one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` (same folder, so the final rename stays on one file
    system), yield it, then flush, fsync and rename it over ``path``. On an exception the temporary
    file is removed and ``path`` is left as it was. Missing parent folders are created.

    Args:
        mode: "w" (text) or "wb" (bytes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": newline})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``Path.write_text`` that replaces the file atomically (:func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text)
