"""Helpers every test module shares (importable as ``support``: pytest puts ``tests/`` on sys.path).

Waiting: a test that waits for something the cluster does in the background polls a condition
with :func:`eventually` (never sleeps a fixed time and then asserts), and fails with what it was
waiting for when the bound passes. The bound is never reached when things work; it only keeps a
broken run from hanging.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = ["WAIT", "children_of", "eventually", "one_at_a_time"]

T = TypeVar("T")

#: Seconds a wait may last before the test fails (generous: the machines are shared and noisy).
WAIT = 60.0


def eventually(check: Callable[[], T], what: str, *, timeout: float = WAIT, interval: float = 0.02) -> T:
    """Call ``check`` until it returns a true value, and return that value.

    Args:
        check: the condition; its first true result is returned (so it can return what it found).
        what: what is awaited, for the failure message ("the task to run").
        timeout: seconds before giving up.
        interval: seconds between two calls.

    Raises:
        AssertionError: ``timed out after {timeout} s waiting for {what}``; the last value of
            ``check`` is not true.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` now, zombies included (from ``/proc``: Linux only)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command name: state, ppid, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


@contextlib.contextmanager
def one_at_a_time(shared_dir: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock named ``name`` in ``shared_dir`` (a directory every xdist worker
    of the run sees) for the block: tests that time a whole pytest run under signals are held
    to bounds that two of them starting zygotes side by side on a 2-core machine can exceed."""
    with open(shared_dir / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
