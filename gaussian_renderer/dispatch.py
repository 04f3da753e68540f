"""Run a validated ``rasterize()`` call on a named, registered backend (no ``auto`` here: that is
``backends.select_backend``'s choice, made before)."""
from __future__ import annotations

from .arguments import RasterizeCall, fail
from .registry import get_backend, isect_capacity_backends


def run_backend(name: str, call: RasterizeCall):
    """``call`` (see :func:`arguments.validate`) rendered by the backend ``name``.

    Returns render (C, H, W, D[+1]), alphas (C, H, W, 1), meta (see ``api.rasterize``).
    Raises RasterizerArgumentError when ``call`` has an ``isect_capacity`` the backend does not
    take, UnknownBackendError for an unregistered name, and whatever the backend raises
    (BackendUnavailableError for a device or dtype it cannot take).
    """
    backend = get_backend(name)
    options = call.options()
    if backend.takes_isect_capacity:
        options["isect_capacity"] = call.isect_capacity
    elif call.isect_capacity is not None:
        needs = " or ".join(f"backend={n!r}" for n in isect_capacity_backends())
        fail(f"`isect_capacity` (a sync-free, CUDA-graph-capturable call) needs {needs}, "
             f"got backend {name!r}; leave it None for the other backends")
    return backend.rasterize(*call.positional(), **options)
