"""A signal handler that only raises a flag.

Saving inside the handler (Lightning's SLURM default) runs at whatever bytecode the
main thread was on: under FSDP or DDP it issues collectives while other ranks are
generating or in a backward, and hangs. The handler here records the request; the
training loop acts on it at a point every rank reaches (see
``callbacks/preemption.py``).
"""
from __future__ import annotations

import signal
import threading
from typing import Iterable

__all__ = ["PreemptionRequest", "preemption_request"]


class PreemptionRequest:
    """The process's pending save-and-stop request (one per process: signals are too)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signal_name: str) -> None:
        if self.signal_name is None:
            self.signal_name = signal_name

    def clear(self) -> None:
        self.signal_name = None

    def _handler(self, signum, frame) -> None:
        self.request(signal.Signals(signum).name)

    def install(self, names: Iterable[str]) -> list[str]:
        """Route the named signals to the flag; returns the names installed. Only the
        main thread may set handlers: elsewhere (a notebook's worker thread) nothing
        is installed and the caller is told by the empty list."""
        if threading.current_thread() is not threading.main_thread():
            return []
        installed = []
        for name in names:
            try:
                signum = signal.Signals[name]
            except KeyError:
                raise ValueError(f"unknown signal {name!r} (use names like 'SIGUSR1', 'SIGUSR2')") from None
            if signum in (signal.SIGKILL, signal.SIGSTOP):
                raise ValueError(f"{name} cannot be handled")
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._handler)
            installed.append(name)
        return installed

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


preemption_request = PreemptionRequest()
