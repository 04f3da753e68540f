"""A value derived from tensors, kept until one of them changes (inference's per-frame constants).

Rendering a trained avatar re-derives, every frame, quantities that depend only on its parameters
(the splats' canonical positions, for one). :class:`DerivedTensor` computes such a value once per
*version* of its source tensors and hands back the same tensor until a source changes, which is
either of:

- replaced: another tensor under the same name (densification rebuilds rows, a checkpoint loads,
  ``.to()`` moves the avatar), seen as another storage or shape;
- modified in place: an optimiser step or a ``copy_`` under ``no_grad`` bumps the tensor's version
  counter (``Tensor._version``), which every in-place ATen op advances.

Writing through ``.data`` (``p.data.copy_(...)``) bypasses the version counter; nothing in the
product does that to a source (loading assigns ``.data = new``, a new storage, which is seen).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["DerivedTensor"]


class DerivedTensor:
    """``value = cache.get(sources, compute)``: ``compute()`` once per version of ``sources``.

    The cache keeps a detached alias of each source (sharing its storage and version counter), so
    a replaced source's storage cannot be reused at the same address while the key refers to it.
    """

    def __init__(self) -> None:
        self._key: list[tuple[torch.Tensor, int]] = []
        self._value: torch.Tensor | None = None
        self.computed = 0  # how many times compute() ran (tests, benches)

    def _fresh(self, sources: Sequence[torch.Tensor]) -> bool:
        if self._value is None or len(sources) != len(self._key):
            return False
        for t, (alias, version) in zip(sources, self._key):
            if (t.data_ptr() != alias.data_ptr() or t.shape != alias.shape or t.stride() != alias.stride()
                    or t.device != alias.device or t.dtype != alias.dtype or t._version != version):
                return False
        return True

    def get(self, sources: Sequence[torch.Tensor], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The value for the current ``sources`` (computed without autograd: a constant of the frame).

        A new value of the old one's shape, dtype and device is written into the old tensor, so
        the value keeps its address: a captured CUDA graph that reads it sees the new value once
        the cache was asked again outside the graph (:class:`scene.rendering.GraphedAvatarRenderer`
        asks before every replay). Keep a ``clone()`` to hold on to a value."""
        if not self._fresh(sources):
            with torch.no_grad():
                value = compute()
                old = self._value
                if (old is not None and old.shape == value.shape and old.dtype == value.dtype
                        and old.device == value.device):
                    value = old.copy_(value)
            self._key = [(t.detach(), t._version) for t in sources]
            self._value = value
            self.computed += 1
        return self._value

    def clear(self) -> None:
        self._key, self._value = [], None
