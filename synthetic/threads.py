"""Thread control for the generator's torch code."""
from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ["single_thread_torch", "single_threaded"]


@contextlib.contextmanager
def single_thread_torch():
    """Run torch ops on one thread, restoring the previous setting afterwards.

    The generator works on many medium-sized tensors; on shared CPU cores (CI, a laptop running
    tests) OpenMP's thread synchronisation then costs far more than it gains (measured on the
    2-core dev machine under load: ~0.3 ms vs ~24 ms for the same 300k-element op with 1 vs 2
    threads). Nested use is fine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def single_threaded(fn):
    """Decorator form of :func:`single_thread_torch`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_thread_torch():
            return fn(*args, **kwargs)
    return wrapper
