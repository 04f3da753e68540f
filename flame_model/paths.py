"""Default locations of the FLAME assets and the errors raised when they are missing or broken.

FLAME is licensed per user, so the product never ships it: the user downloads the files from
https://flame.is.tue.mpg.de and puts them where :data:`DEFAULT_FLAME_MODEL_PATH` points (or passes
``--flame PATH``). Every message here names the exact absolute path that was looked at, because
"file not found" without the path is the most common support question for FLAME-based code.
"""
from __future__ import annotations

import os
from pathlib import Path

from utils.errors import InputFileError, MissingFileError

#: Folder the user drops the FLAME files into (see ``assets/flame/README.md``).
FLAME_ASSET_DIR = Path(__file__).resolve().parent / "assets" / "flame"
#: File name of FLAME 2023 ("FLAME 2023 (with jaw rotation)") as distributed.
FLAME_MODEL_FILENAME = "flame2023.pkl"
#: File name of FLAME 2020, which has the same layout and also loads.
FLAME_2020_MODEL_FILENAME = "generic_model.pkl"
#: File name of the vertex region masks ("FLAME Vertex Masks").
FLAME_MASKS_FILENAME = "FLAME_masks.pkl"
DEFAULT_FLAME_MODEL_PATH = FLAME_ASSET_DIR / FLAME_MODEL_FILENAME
DEFAULT_FLAME_MASKS_PATH = FLAME_ASSET_DIR / FLAME_MASKS_FILENAME
FLAME_DOWNLOAD_URL = "https://flame.is.tue.mpg.de"


class FlameModelMissingError(MissingFileError):
    """The FLAME model pickle does not exist where it was expected."""


class FlameMasksMissingError(MissingFileError):
    """``FLAME_masks.pkl`` is needed (explicitly given, or a feature requires a region) but absent."""


class FlameFileError(InputFileError):
    """A FLAME model or masks pickle exists but its content cannot be used (key, shape, counts)."""


class UnsafePickleError(FlameFileError):
    """A pickle refers to a class or function outside the allow-list (numpy, scipy.sparse, chumpy)."""


def _abs(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def resolve_model_path(model_path: str | os.PathLike | None) -> Path:
    """Absolute path of the FLAME model pickle to load.

    Args:
        model_path: a ``.pkl`` file, a folder holding ``flame2023.pkl`` (or FLAME 2020's
            ``generic_model.pkl``), or None for :data:`DEFAULT_FLAME_MODEL_PATH`.

    Returns:
        The absolute path of an existing file.

    Raises:
        FlameModelMissingError: with the download instructions and the exact expected path.
    """
    path = DEFAULT_FLAME_MODEL_PATH if model_path is None else _abs(model_path)
    if path.is_dir():
        for name in (FLAME_MODEL_FILENAME, FLAME_2020_MODEL_FILENAME):
            if (path / name).is_file():
                return path / name
        path = path / FLAME_MODEL_FILENAME
    if not path.is_file():
        raise missing_model_error(path)
    return path


def missing_model_error(path: str | os.PathLike) -> FlameModelMissingError:
    """The error (not raised) for a FLAME model that is not at ``path``."""
    path = _abs(path)
    return FlameModelMissingError(
        f"FLAME model not found: {path}. FLAME cannot be shipped with this code (per-user licence): "
        f"download \"FLAME 2023 (with jaw rotation)\" from {FLAME_DOWNLOAD_URL} after registering and "
        f"accepting the licence, and put {path.name if path.suffix == '.pkl' else FLAME_MODEL_FILENAME} "
        f"at exactly {path} (the default location is {DEFAULT_FLAME_MODEL_PATH}), or pass --flame PATH "
        f"pointing at your copy. FLAME 2020's {FLAME_2020_MODEL_FILENAME} also works.")


def missing_masks_error(path: str | os.PathLike, needed_for: str | None = None) -> FlameMasksMissingError:
    """The error (not raised) for a ``FLAME_masks.pkl`` that is not at ``path``.

    Args:
        path: where the masks file was expected.
        needed_for: optional reason, e.g. "region 'face'".
    """
    path = _abs(path)
    why = f" (needed for {needed_for})" if needed_for else ""
    return FlameMasksMissingError(
        f"FLAME vertex masks not found: {path}{why}. Download \"FLAME Vertex Masks\" "
        f"({FLAME_MASKS_FILENAME}) from {FLAME_DOWNLOAD_URL} after accepting the licence and put it at "
        f"exactly {path} (by default it sits beside the FLAME model, {DEFAULT_FLAME_MASKS_PATH}), "
        f"or pass its path explicitly (--flame-masks PATH).")
