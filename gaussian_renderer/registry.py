"""The rasterizer backends, each registered once: the one list that everything else reads.

A backend is a :class:`Backend` record (name, rasterize function, cheap availability check, fix
text, devices, dtypes, place in ``auto``'s order). The built-in ones register themselves at the
end of their own modules (``torch_backend.py``, ``triton_backend.py``, ``gsplat_backend.py``),
which ``gaussian_renderer/__init__.py`` imports; another backend is one call::

    register_backend(Backend(name="mine", rasterize=rasterize_mine, import_error=mine_import_error,
                             fix="pip install mine", devices=("cuda",), dtypes=(torch.float32,)))

Readers: ``rasterize()``'s argument check and dispatch (``arguments.py``, ``dispatch.py``),
``select_backend`` / ``probe_backend`` and ``auto``'s order (``backends.py``),
``bench/gpu_check.py``, and the CLIs' ``--backend`` help and config validation
(:func:`backend_choices_text`, :func:`check_backend_name`).

This module imports no backend module, so every backend can import it without an import cycle.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from .errors import UnknownBackendError

AUTO = "auto"
# The backend every other one is checked against (its probe is trivially passed; the parity probe
# renders it on the CPU). It runs on any device and in any float dtype, and ends auto's order.
REFERENCE_BACKEND = "torch"


@dataclass(frozen=True)
class Backend:
    """One rasterizer backend.

    Attributes:
        name: what ``rasterize(backend=...)``, ``--backend`` and ``run.backend`` accept.
        rasterize: ``rasterize(means (N, 3), quats (N, 4), scales (N, 3), opacities (N,) or (C, N),
            colors (N, D) / (C, N, D) or SH (N, K, 3) / (C, N, K, 3), viewmats (C, 4, 4),
            Ks (C, 3, 3), width, height, *, near_plane, far_plane, sh_degree, backgrounds (C, D) or
            None, render_mode, eps2d, tile_size[, isect_capacity]) -> (render (C, H, W, D[+1]),
            alphas (C, H, W, 1), meta)``; arguments already validated by ``gaussian_renderer.api``.
            It raises :class:`~gaussian_renderer.errors.BackendUnavailableError` for a device or
            dtype it cannot take.
        import_error: cheap availability check, no rendering: None when the backend's packages
            import in this process, else why not (one line). Whether it renders correctly on a
            device is the parity probe's question (``backends.probe_backend``).
        fix: what to install or do when it cannot run (ends warning and error lines).
        devices: device types it runs on (``torch.device.type``), None = any. ``auto`` considers
            it only on these.
        dtypes: float dtypes it takes; ``auto`` considers it only for these.
        auto_rank: place in ``auto``'s order, lower first; None = never chosen by ``auto``.
        takes_isect_capacity: accepts ``isect_capacity`` (a fixed-size, sync-free binning).
    """

    name: str
    rasterize: Callable[..., tuple]
    import_error: Callable[[], Optional[str]]
    fix: str
    devices: Optional[tuple[str, ...]] = None
    dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    auto_rank: Optional[int] = None
    takes_isect_capacity: bool = False

    def runs_on(self, device: torch.device | str) -> bool:
        return self.devices is None or torch.device(device).type in self.devices


# name -> Backend, in registration order (the order of backend_names() and of the help texts).
_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend, replace: bool = False) -> Backend:
    """Add ``backend`` under its name (a second backend of the same name is an error unless
    ``replace``). Returns it, so a module can keep the record."""
    name = backend.name
    if not isinstance(name, str) or not name or name == AUTO or any(c.isspace() or c in "|," for c in name):
        raise ValueError(f"rasterizer backend name must be a non-empty word other than {AUTO!r}, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"rasterizer backend {name!r} is already registered")
    _REGISTRY[name] = backend
    return backend


def unregister_backend(name: str) -> Backend:
    """Remove the backend ``name`` (UnknownBackendError if it is not registered); returns it."""
    backend = get_backend(name)
    del _REGISTRY[name]
    return backend


@contextmanager
def backend_registered(backend: Backend) -> Iterator[Backend]:
    """Register ``backend`` for the duration of a ``with`` block (tests, experiments), then remove
    it again, so the process-wide registry is left as it was."""
    register_backend(backend)
    try:
        yield backend
    finally:
        if _REGISTRY.get(backend.name) is backend:
            del _REGISTRY[backend.name]


def backend_names() -> tuple[str, ...]:
    """The registered backend names, in registration order, without "auto"."""
    return tuple(_REGISTRY)


def backend_choices() -> tuple[str, ...]:
    """Every name a ``backend`` argument accepts: "auto", then :func:`backend_names` (for
    argparse ``choices=``)."""
    return (AUTO, *_REGISTRY)


def backend_choices_text() -> str:
    """The accepted names for help texts, e.g. "auto | torch | triton | gsplat"."""
    return " | ".join(backend_choices())


def unknown_backend_message(name: object, where: str, allow_auto: bool = True) -> Optional[str]:
    """None when ``name`` is "auto" (if ``allow_auto``) or a registered backend, else one line:
    "<where> must be one of auto, torch, triton, gsplat, got 'x'". For callers that raise their own
    error class (``rasterize()`` raises RasterizerArgumentError)."""
    choices = backend_choices() if allow_auto else backend_names()
    if isinstance(name, str) and name in choices:
        return None
    return f"{where} must be one of {', '.join(choices)}, got {name!r}"


def check_backend_name(name: object, where: str, allow_auto: bool = True) -> None:
    """Raise :class:`UnknownBackendError` (a ValueError and a UserFacingError) with the one line
    of :func:`unknown_backend_message` unless ``name`` is accepted. ``where`` names the setting,
    e.g. "run.backend" or "--backend"."""
    message = unknown_backend_message(name, where, allow_auto)
    if message is not None:
        raise UnknownBackendError(message)


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (UnknownBackendError for anything else, "auto" included)."""
    check_backend_name(name, "rasterizer backend", allow_auto=False)
    return _REGISTRY[name]


def auto_order(device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[str, ...]:
    """The backends ``auto`` tries on ``device`` for ``dtype`` tensors, first choice first: those
    with an ``auto_rank`` that run on the device type and take the dtype, by rank (ties in
    registration order). With the built-in backends: CUDA float32 -> (triton, gsplat, torch);
    anything else -> (torch,)."""
    ranked = [b for b in _REGISTRY.values() if b.auto_rank is not None and b.runs_on(device) and dtype in b.dtypes]
    return tuple(b.name for b in sorted(ranked, key=lambda b: b.auto_rank))


def isect_capacity_backends() -> tuple[str, ...]:
    """The backends that take ``isect_capacity`` (for the error when another one is given it)."""
    return tuple(b.name for b in _REGISTRY.values() if b.takes_isect_capacity)
