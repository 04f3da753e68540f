"""Checks that GHA's components are composed with the ``gha`` geometry they read from."""
from __future__ import annotations

from scene.model.registry import require_geometry_type

__all__ = ["require_gha_geometry"]


def require_gha_geometry(model, where: str, what: str) -> None:
    """One error naming ``where`` when the model's geometry is not ``gha`` (whose per-splat feature
    F0, blend weights or attribute shifts ``what`` reads)."""
    require_geometry_type(model, where, "gha", f"the gha {what}", _READS[what])


_READS = {"colour": "per-splat features and blend weights", "opacity": "opacity shifts (eq. 5)"}
