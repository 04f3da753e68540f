"""Writing files on worker threads while the main thread goes on computing.

    with WritePool(workers=4) as pool:
        for frame in frames:
            image = render(frame)                 # the main thread keeps the accelerator busy
            pool.submit(write_png, path, image)   # encoded and written by a worker

PNG encoding (zlib) and file writes release the GIL, so threads run them in parallel with the
main thread. The backlog is bounded (``submit`` blocks while it is full), so the memory held by
jobs not yet written stays bounded however fast the main thread is. ``workers=0`` runs each job
inline in ``submit``: the plain reference the pooled path is held against.

Errors: the first exception raised by a job is kept; the jobs still queued behind it are dropped
(not run), and the error is raised in the main thread by the next :meth:`WritePool.submit` or by
:meth:`WritePool.close` (once, as it was raised: a :class:`utils.errors.UserFacingError` stays one
line for the CLIs). Leaving the ``with`` block on an exception of the main thread still runs the
jobs already queued (they hold finished work), except on ``KeyboardInterrupt`` (a second Ctrl-C
means stop now); the main thread's exception is the one that propagates.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable

__all__ = ["WritePool", "default_write_workers"]

_STOP = object()


def default_write_workers() -> int:
    """Worker threads for PNG writing: one per CPU core, at most 4 (more gains nothing: a frame's
    few PNGs are encoded in about the time the next frame renders on a GPU)."""
    return max(1, min(4, os.cpu_count() or 1))


class WritePool:
    """Runs ``fn(*args)`` jobs on ``workers`` threads with at most ``backlog`` jobs waiting.

    Args:
        workers: threads (0: every job runs inline, in ``submit``).
        backlog: jobs that may wait for a thread (default: 2 per worker); ``submit`` blocks beyond.
    """

    def __init__(self, workers: int, backlog: int | None = None):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, backlog if backlog is not None else 2 * workers))
        self._error: BaseException | None = None
        self._error_raised = False
        self._drop = threading.Event()  # set on an error or a hurried close: queued jobs are skipped
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"write-pool-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    # -- the main thread --------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (blocks while the backlog is full); raises a failed job's error."""
        if self._closed:
            raise RuntimeError("WritePool.submit after close")
        self._raise_error()
        if not self._threads:
            fn(*args)
            return
        self._queue.put((fn, args))

    def close(self, run_pending: bool = True) -> None:
        """Wait for the workers to finish (the queued jobs too unless ``run_pending`` is False),
        then raise the first job error if it was not raised yet. Idempotent."""
        if not self._closed:
            self._closed = True
            if not run_pending:
                self._drop.set()
            for _ in self._threads:
                self._queue.put(_STOP)
            for t in self._threads:
                t.join()
        self._raise_error()

    def __enter__(self) -> "WritePool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # The main thread's exception propagates; a job's error raised now would hide it.
        self._error_raised = True
        self.close(run_pending=not issubclass(exc_type, KeyboardInterrupt))

    def _raise_error(self) -> None:
        with self._lock:
            error, raise_it = self._error, self._error is not None and not self._error_raised
            if raise_it:
                self._error_raised = True
        if raise_it:
            raise error

    # -- the workers ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._drop.is_set():
                continue
            fn, args = item
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread as it is
                with self._lock:
                    if self._error is None:
                        self._error = exc
                self._drop.set()
