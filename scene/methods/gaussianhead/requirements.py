"""Checks that GaussianHead's components are composed with each other."""
from __future__ import annotations

from utils.errors import InputFileError

__all__ = ["require_slot"]


def require_slot(model, slot: str, where: str, what: str) -> None:
    """One error naming ``where`` when ``model.<slot>`` is not ``gaussianhead`` (whose ``what`` the
    component at ``where`` reads)."""
    chosen = getattr(getattr(model, slot, None), "type", None)
    if chosen != "gaussianhead":
        raise InputFileError(f"{where}: the gaussianhead component reads {what} of the gaussianhead {slot}; set "
                             f"model.{slot} to {{type: gaussianhead}} (it is {chosen!r})")
