"""Differentiable 3D Gaussian rasterization behind one API (docs/DESIGN.md section 5).

``from gaussian_renderer import rasterize`` -- gsplat 1.x ``rasterization()`` argument names; a
pure-PyTorch tile rasterizer (any device, the reference), Triton compositing kernels (CUDA) and a
gsplat adapter (CUDA). See ``api.rasterize``; ``select_backend`` says which one runs and why.

Modules, each importing only those listed after it (no import cycles):

- ``api.py``: ``rasterize()`` = validation, the ``auto`` choice, dispatch;
- ``backends.py``: ``probe_backend`` (one-time parity probe), ``select_backend`` (``auto``);
- ``parity.py``: the probe scene and the comparison with the torch reference;
- ``dispatch.py``: a validated call run on a named backend;
- ``arguments.py``: argument validation (``RasterizerArgumentError``), ``RENDER_MODES``;
- ``triton_backend.py`` (+ ``triton_kernels.py``, loaded by name on first use),
  ``gsplat_backend.py``, ``torch_backend.py``: the backends; each registers itself on import;
- ``compositing.py``, ``tiles.py``, ``projection.py``, ``sh.py``: the torch backend's parts;
- ``registry.py``: the :class:`Backend` records -- the one list of backends (names, fixes,
  devices, ``auto``'s order) that everything above reads;
- ``errors.py``: the error classes.

Backend names for configs and CLIs: :func:`backend_names`, :func:`backend_choices` (with
"auto", for argparse ``choices=``), :func:`backend_choices_text` ("auto | torch | triton |
gsplat", for help texts), :func:`check_backend_name` (raises :class:`UnknownBackendError`).
A new backend is one :func:`register_backend` call; :func:`backend_registered` registers one for
a ``with`` block only (tests).
"""
# The built-in backends register themselves on import; this order is backend_names()' order.
from . import torch_backend, triton_backend, gsplat_backend  # noqa: F401,I001  isort:skip
from .api import RENDER_MODES, rasterize
from .backends import BackendChoice, probe_backend, select_backend
from .errors import BackendUnavailableError, RasterizerArgumentError, UnknownBackendError
from .gsplat_backend import gsplat_available
from .registry import (
    AUTO,
    Backend,
    backend_choices,
    backend_choices_text,
    backend_names,
    backend_registered,
    check_backend_name,
    register_backend,
    unregister_backend,
)
from .sh import eval_sh, num_sh_bases

__all__ = [
    "rasterize",
    "RasterizerArgumentError",
    "BackendUnavailableError",
    "UnknownBackendError",
    "gsplat_available",
    "select_backend",
    "probe_backend",
    "BackendChoice",
    "eval_sh",
    "num_sh_bases",
    "RENDER_MODES",
    "BACKENDS",
    "AUTO",
    "Backend",
    "register_backend",
    "unregister_backend",
    "backend_registered",
    "backend_names",
    "backend_choices",
    "backend_choices_text",
    "check_backend_name",
]


def __getattr__(name: str):
    # BACKENDS (what rasterize(backend=...) accepts) is read from the registry when asked for, so
    # it includes backends registered after this package was imported.
    if name == "BACKENDS":
        return backend_choices()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
