"""Stop at a clean boundary on the signals a user or a scheduler sends.

    with StopSignals() as stop:
        for item in work:
            do(item)
            if stop.received:
                break            # the state is consistent here; save it and exit stop.exit_code

Inside the block SIGTERM and SIGUSR1 (a scheduler's preemption or time-limit warning, as SLURM
and launch.py send them) and SIGINT (Ctrl-C) only record their name; a second SIGINT raises
``KeyboardInterrupt`` at once (stop now, without finishing). Outside the main thread (where
Python cannot install handlers) the block changes nothing and ``received`` stays None. The exit
codes are those of train.py: 3 preempted, 130 interrupted.
"""
from __future__ import annotations

import signal
import threading

__all__ = ["STOP_EXIT_CODES", "StopSignals"]

STOP_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 3, "SIGUSR1": 3}


class StopSignals:
    """Records the first stop signal received in the block (``received``: its name, or None)."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    @property
    def exit_code(self) -> int:
        """The exit status that reports the stop (3 for SIGTERM/SIGUSR1, 130 for SIGINT)."""
        return STOP_EXIT_CODES[self.received] if self.received else 0

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt
        if self.received is None:
            self.received = name

    def request(self, name: str) -> None:
        """Record a stop that came another way (a key of :data:`STOP_EXIT_CODES`: e.g. a signal
        received by an outer ``StopSignals`` before this one was installed)."""
        if self.received is None:
            self.received = name

    def install(self) -> "StopSignals":
        """Install the handlers (what ``with`` does on entry); for a whole process, never undone."""
        if threading.current_thread() is threading.main_thread():
            for name in STOP_EXIT_CODES:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
