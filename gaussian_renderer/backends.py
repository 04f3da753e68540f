"""Which rasterizer backend runs: a one-time parity probe per backend and device, and ``auto``.

A backend that imports is not yet a backend that works: gsplat compiles its CUDA code on the first
call (and is not known to build with the CUDA 13 toolkit), and a kernel can compile yet be wrong.
So before ``auto`` uses an accelerated backend, :func:`probe_backend` renders a small seeded scene
through it and through the ``torch`` reference on the CPU (``parity.py``), and compares the image
and the gradient of every input. The outcome is cached for the process; ``auto`` falls back to
the next candidate with one warning line (which backend, why, the fix). An explicit request for a
backend that fails its probe is one clear error (:class:`BackendUnavailableError`).

The backends, their fixes and ``auto``'s order come from the registry (``registry.py``).

    choice = select_backend("auto", torch.device("cuda"))   # BackendChoice(name, device, reason)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .errors import BackendUnavailableError
from .parity import compare_with_reference, parity_failure
from .registry import AUTO, REFERENCE_BACKEND, auto_order, check_backend_name, get_backend



@dataclass(frozen=True)
class BackendChoice:
    """The backend that will run, on which device, and why it was chosen."""

    name: str
    device: str
    reason: str

    def describe(self) -> str:
        return f"rasterizer {self.name} on {self.device} ({self.reason})"


# Both caches are keyed by the registered Backend records, not their names, so a backend
# registered again under the same name (a test's stand-in) is probed afresh.
# (Backend, device) -> None when the probe passed, else the reason (one line).
_probe_results: dict = {}
# (device, candidate Backends) -> the BackendChoice of ``auto``: rasterize(backend="auto") asks every
# call, and the skipped backends' warning lines must be said once, not once per frame.
_auto_choices: dict = {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def probe_backend(name: str, device: torch.device) -> Optional[str]:
    """None when ``name`` renders the probe scene on ``device`` like the torch reference, else the
    reason in one line. Cached per (backend, device) for the life of the process.

    Raises UnknownBackendError (a ValueError) when ``name`` is not registered."""
    backend = get_backend(name)
    key = (backend, str(device))
    if key in _probe_results:
        return _probe_results[key]
    if name == REFERENCE_BACKEND:
        _probe_results[key] = None
        return None
    reason = backend.import_error()
    if reason is None:
        try:
            parity = compare_with_reference(name, device)
        except Exception as exc:  # a failed compile, a missing symbol, an unsupported device...
            reason = _first_line(exc)
        else:  # tolerances that a correct GPU build meets (parity.py derives them)
            reason = parity_failure(parity)
    _probe_results[key] = reason
    return reason


def clear_probe_cache() -> None:
    """Forget probe outcomes (after installing a package in a long-lived process)."""
    _probe_results.clear()
    _auto_choices.clear()


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def select_backend(requested: str, device: torch.device | str, candidates: Optional[tuple] = None,
                   warn: Callable[[str], None] = _warn) -> BackendChoice:
    """The backend to use for ``requested`` ("auto" or a registered name) on ``device``.

    ``auto``: the first of ``candidates`` (default ``registry.auto_order(device)``: on CUDA
    triton, gsplat, torch; elsewhere torch) whose probe passes; each one skipped gets one ``warn``
    line, once per process (the choice is cached, as ``rasterize(backend="auto")`` asks every
    call). A named backend must pass its probe, else :class:`BackendUnavailableError`; an
    unregistered name is an UnknownBackendError (a BackendUnavailableError and a ValueError).
    """
    device = torch.device(device)
    check_backend_name(requested, "rasterizer backend")
    if requested != AUTO:
        reason = probe_backend(requested, device)
        if reason is not None:
            raise BackendUnavailableError(
                f"rasterizer backend {requested!r} cannot run on {device}: {reason}. Fix: {get_backend(requested).fix}")
        return BackendChoice(requested, str(device),
                             "requested" + ("" if requested == REFERENCE_BACKEND else ", probe passed"))
    if candidates is None:
        candidates = auto_order(device)
    key = (str(device), tuple(get_backend(name) for name in candidates))
    if key not in _auto_choices:
        _auto_choices[key] = _first_working(tuple(candidates), device, warn)
    return _auto_choices[key]


def _first_working(candidates: tuple, device: torch.device, warn: Callable[[str], None]) -> BackendChoice:
    """``auto``'s choice: the first candidate whose probe passes, one warning per skipped one."""
    skipped = []
    for name in candidates:
        reason = probe_backend(name, device)
        if reason is None:
            why = "auto: " + ("probe passed" if name != REFERENCE_BACKEND else
                              ("the reference backend" if not skipped else "no faster backend passed its probe"))
            return BackendChoice(name, str(device), why)
        skipped.append(name)
        warn(f"[rasterizer] warning: skipping backend {name} on {device}: {reason}. Fix: {get_backend(name).fix}")
    raise BackendUnavailableError(f"no rasterizer backend among {', '.join(candidates)} works on {device}")
