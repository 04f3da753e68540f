"""Checks that GHA's components are composed with the ``gha`` geometry they read from."""
from __future__ import annotations

from utils.errors import InputFileError

__all__ = ["require_gha_geometry"]


def require_gha_geometry(model, where: str, what: str) -> None:
    """One error naming ``where`` when the model's geometry is not ``gha`` (whose per-splat feature
    F0, blend weights or attribute shifts ``what`` reads)."""
    geometry = getattr(model, "geometry", None)
    if getattr(geometry, "type", None) != "gha":
        raise InputFileError(f"{where}: the gha {what} reads the gha geometry's {_READS[what]}; set model.geometry "
                             f"to {{type: gha}} (it is {getattr(geometry, 'type', None)!r})")


_READS = {"colour": "per-splat features and blend weights", "opacity": "opacity shifts (eq. 5)"}
