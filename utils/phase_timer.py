"""Wall time per named phase of a loop body (data, FLAME, decoders, rasterization, ...).

Off by default, and then free apart from one ``with`` per phase: the training step is always
written in phases, and ``bench/step_profile.py`` switches the timer on. On CUDA an enabled timer
synchronises the device at each phase edge (otherwise asynchronous kernels would be charged to
whichever phase happens to wait for them), so it slows the loop down: profile, do not train with it.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates seconds per phase name.

    Args:
        enabled: measure (else every ``with timer("x")`` is a no-op).
        device: the device whose queued work each phase must finish before its clock stops.
    """

    def __init__(self, enabled: bool = False, device: torch.device | str = "cpu"):
        self.enabled = enabled
        self.device = torch.device(device)
        self.seconds: dict = defaultdict(float)
        self.calls: dict = defaultdict(int)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, name: str):
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def mean_ms(self, per: int) -> dict:
        """{phase: milliseconds per loop iteration}, averaged over ``per`` iterations."""
        return {name: 1000.0 * s / max(per, 1) for name, s in self.seconds.items()}


DISABLED = PhaseTimer(enabled=False)
