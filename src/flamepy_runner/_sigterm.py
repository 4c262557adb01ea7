"""SIGTERM unwinds open Runners like Ctrl-C does, so their cleanup runs.

Python's default SIGTERM action ends the process at once: ``finally`` blocks and ``with``
exits never run, and a Runner killed that way leaves its application registered, its sessions
open and ``dist/<name>.tar.gz`` on disk. While at least one Runner is open, and only if
SIGTERM still has its default action (a program or framework that handles SIGTERM itself is
left alone), the first SIGTERM raises :class:`SystemExit` (status 143 = 128 + SIGTERM) in the
main thread, which unwinds the ``with`` blocks; the default action is restored at the same
moment, so a second SIGTERM ends the process at once. When the last Runner closes, the default
is restored.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["Terminated", "release", "retain"]


class Terminated(SystemExit):
    """The SystemExit raised by the first SIGTERM while a Runner is open (status 143)."""


_lock = threading.Lock()
_open = 0
_installed = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _installed
    with _lock:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _installed = False
    raise Terminated(128 + signal.SIGTERM)


def retain() -> None:
    """A Runner opened: make SIGTERM unwind it (main thread, default SIGTERM action only)."""
    global _open, _installed
    with _lock:
        _open += 1
        if _installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
        _installed = True


def release() -> None:
    """A Runner closed: when none is left open, give SIGTERM its default action back."""
    global _open, _installed
    with _lock:
        _open = max(0, _open - 1)
        if _open or not _installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal only works there; the handler stays until the next release
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _installed = False
