"""Dataset formats behind one registry: every CLI loads subjects and driving sequences here.

A format is a :class:`DatasetFormat`: a name, a test that recognises its folders, and two loaders
that return the format-neutral :class:`scene.data.subject.Subject`:

- ``load_subject(path, resolution_scale, splits, image_cache_bytes)``: a training subject with its
  train / val / test splits;
- ``load_sequence(path, resolution_scale, image_cache_bytes)``: a driving sequence, every frame
  under ``frames["all"]``.

:func:`load_subject` and :func:`load_sequence` use the first registered format that recognises
the path (in registration order), else the default format (NeRSemble), whose loader then names
what is missing. A new
format registers itself with :func:`register_format`; nothing else changes.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from scene.data import nersemble
from scene.data.subject import Subject

__all__ = ["DatasetFormat", "register_format", "dataset_format", "load_subject", "load_sequence", "FORMATS"]


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    recognises: Callable[[Path], bool]
    load_subject: Callable[..., Subject]
    load_sequence: Callable[..., Subject]


FORMATS: dict[str, DatasetFormat] = {}
DEFAULT_FORMAT = "nersemble"


def register_format(fmt: DatasetFormat) -> DatasetFormat:
    """Add (or replace) a format under ``fmt.name``."""
    FORMATS[fmt.name] = fmt
    return fmt


def dataset_format(path: str | os.PathLike) -> DatasetFormat:
    """The first registered format (in registration order) that recognises ``path``, else the
    default (NeRSemble), whose loader then says what the folder lacks."""
    p = Path(path)
    for fmt in FORMATS.values():
        if fmt.recognises(p):
            return fmt
    return FORMATS[DEFAULT_FORMAT]


def load_subject(path: str | os.PathLike, progress: bool = False, cache=None, **kwargs) -> Subject:
    """A training subject in any registered format (keyword arguments as the format's loader).

    ``progress``: progress bars while loading, passed to loaders that take a ``progress``
    argument (the NeRSemble one does; a format's loader without it loads silently).
    ``cache``: a :class:`scene.data.subject_cache.SubjectCache` for loaders that take a ``cache``
    argument (the NeRSemble one keeps its parse there; another format's loader parses every time)."""
    loader = dataset_format(path).load_subject
    parameters = inspect.signature(loader).parameters
    if progress and "progress" in parameters:
        kwargs["progress"] = True
    if cache is not None and "cache" in parameters:
        kwargs["cache"] = cache
    return loader(path, **kwargs)


def load_sequence(path: str | os.PathLike, **kwargs) -> Subject:
    """A driving sequence in any registered format (keyword arguments as the format's loader)."""
    return dataset_format(path).load_sequence(path, **kwargs)


register_format(DatasetFormat(DEFAULT_FORMAT, nersemble.is_nersemble_folder, nersemble.load_subject,
                              nersemble.load_sequence))
