"""The renderer's error classes (no other imports from this package, so every module can raise them).

- :class:`RasterizerArgumentError` (a ValueError): a ``rasterize()`` argument is malformed.
- :class:`BackendUnavailableError` (a :class:`utils.errors.UserFacingError`, so the CLIs print it
  as one line): the backend asked for cannot run here (missing package, wrong device or dtype,
  failed parity probe).
- :class:`UnknownBackendError`: a backend name that is neither ``auto`` nor registered. Also a
  BackendUnavailableError (what ``select_backend`` raised for unknown names before the registry)
  and a ValueError (what config validation raises), so either ``except`` catches it.
"""
from __future__ import annotations

from utils.errors import UserFacingError


class RasterizerArgumentError(ValueError):
    """A ``rasterize()`` argument has the wrong shape, dtype, device or value."""


class BackendUnavailableError(UserFacingError, RuntimeError):
    """The requested rasterizer backend cannot run here (missing package or no CUDA tensors)."""


class UnknownBackendError(BackendUnavailableError, ValueError):
    """A rasterizer backend name that is not registered (one line listing the registered names)."""
