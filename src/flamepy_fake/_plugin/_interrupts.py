"""Signals during a pytest run: SIGTERM ends it like Ctrl-C, and every SIGINT/SIGTERM is counted.

pytest marks a run interrupted only once its KeyboardInterrupt handler has run; a second signal
can land before that, or in the middle of teardown. The fixtures therefore also ask
:func:`signals_received`, so an interrupted run never gets the leftover checks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any

import pytest

__all__ = ["install_signal_handlers", "restore_signal_handlers", "signals_received"]

_SIGTERM_HANDLER = pytest.StashKey[Any]()
_SIGINT_HANDLER = pytest.StashKey[Any]()
_RECEIVED = pytest.StashKey["_Received"]()


class _SigtermAsInterrupt:
    """SIGTERM ends the run like Ctrl-C: pytest tears fixtures down, clusters stop cleanly.

    An xdist controller first passes the signal on to its workers (which handle it the same
    way), since ``timeout`` and CI runners often signal only the process they started.
    """

    def __init__(self, xdist_controller: bool, received: _Received) -> None:
        self.xdist_controller = xdist_controller
        self.received = received

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.signals += 1
        if self.xdist_controller:
            _forward_to_workers(signum)
        raise KeyboardInterrupt(f"flamepy_fake: received {signal.Signals(signum).name}")


class _Received:
    """How many SIGINT/SIGTERM this run got. pytest marks a run interrupted only once its
    KeyboardInterrupt handler has run, and a second Ctrl-C can land before that (or in the
    middle of teardown): the fixtures ask this count too, so an interrupted run never gets the
    leftover checks."""

    def __init__(self) -> None:
        self.signals = 0


class _SigintRecorder:
    """Python's own SIGINT behaviour (KeyboardInterrupt), counted in :class:`_Received`."""

    def __init__(self, received: _Received) -> None:
        self.received = received

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.signals += 1
        signal.default_int_handler(signum, frame)


def _forward_to_workers(signum: int) -> None:
    """Pass the signal on to this process's children (xdist workers), so each cleans up."""
    for pid in _child_pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def _child_pids() -> list[int]:
    me, found = os.getpid(), []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry))
    return found


def install_signal_handlers(config: pytest.Config) -> None:
    """Count SIGINT, and turn SIGTERM into pytest's interrupt, for this run (``pytest_configure``)."""
    # Only where nobody else handles the signal, and only from the main thread (Python's rule).
    received = config.stash[_RECEIVED] = _Received()
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        recorder = _SigintRecorder(received)
        signal.signal(signal.SIGINT, recorder)
        config.stash[_SIGINT_HANDLER] = recorder
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    controller = (
        bool(getattr(config.option, "numprocesses", None)) and "PYTEST_XDIST_WORKER" not in os.environ
    )
    handler = _SigtermAsInterrupt(xdist_controller=controller, received=received)
    signal.signal(signal.SIGTERM, handler)
    config.stash[_SIGTERM_HANDLER] = handler


def restore_signal_handlers(config: pytest.Config) -> None:
    """Put back what :func:`install_signal_handlers` replaced, if still ours (``pytest_unconfigure``)."""
    handler = config.stash.get(_SIGTERM_HANDLER, None)
    if handler is not None and signal.getsignal(signal.SIGTERM) is handler:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    recorder = config.stash.get(_SIGINT_HANDLER, None)
    if recorder is not None and signal.getsignal(signal.SIGINT) is recorder:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def signals_received(config: pytest.Config) -> int:
    """How many SIGINT/SIGTERM this run got so far."""
    received = config.stash.get(_RECEIVED, None)
    return 0 if received is None else received.signals
